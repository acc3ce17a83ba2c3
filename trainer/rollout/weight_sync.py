"""Actor -> rollout weight sync in buckets, without Ray's object store or disk.

Actor rank 0 and every rollout engine form their own small process group (gloo on CPU, NCCL on GPU),
separate from the actor's data-parallel group. The weights travel in buckets of about
`rollout.sync_bucket_mb`: every actor rank gathers one tensor at a time (FSDP2 and ZeRO-3 need all ranks
for that), rank 0 copies each into the bucket buffer, and when a bucket is full it goes out and the
engines load it in place. So a sync's extra memory on the sending rank is one bucket plus the tensor being
gathered, whatever the model's size.

How a full bucket reaches the engines:
- collective: rank 0 broadcasts the bucket buffer; each engine receives it into a buffer of its own.
- shared_memory (one host): the buffer is a file in /dev/shm every side maps; rank 0 writes it, a one-number
  broadcast says it is ready, and a second collective says every engine has loaded it, so it can be reused.

A bucket holds whole decoder layers: vLLM fuses q/k/v and gate/up into one parameter, which must be
loaded within one call.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist

ALIGN = 64  # bytes: every tensor in a bucket starts at a multiple, so a view of any dtype is aligned


@dataclass(frozen=True)
class TensorMeta:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return int(torch.Size(self.shape).numel())

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def describe(named_tensors) -> list[TensorMeta]:
    """The layout of (name, tensor) pairs, e.g. a state dict's items()."""
    return [TensorMeta(name, tuple(t.shape), t.dtype) for name, t in named_tensors]


def layout_bytes(metas: list[TensorMeta]) -> int:
    return sum(m.nbytes for m in metas)


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


@dataclass(frozen=True)
class Bucket:
    metas: tuple[TensorMeta, ...]
    offsets: tuple[int, ...]
    "Byte offset of each tensor in the bucket buffer."
    nbytes: int

    def views(self, buffer: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each tensor of the bucket as a view into a byte buffer."""
        return {m.name: buffer[o : o + m.nbytes].view(m.dtype).view(m.shape) for m, o in zip(self.metas, self.offsets)}


def unit_of(name: str) -> str:
    """What must not be split across buckets: the decoder layer (`model.layers.3.mlp.up_proj.weight` ->
    `model.layers.3`), or for weights outside numbered blocks, the module that holds them."""
    match = re.match(r"(.*?\.\d+)\.", name)
    return match.group(1) if match else name.rpartition(".")[0]


def plan_buckets(metas: list[TensorMeta], bucket_bytes: int) -> list[Bucket]:
    """Consecutive whole units packed into buckets of at most `bucket_bytes`; a unit larger than that
    makes a bucket of its own."""
    units: list[list[TensorMeta]] = []
    for meta in metas:
        if units and unit_of(units[-1][-1].name) == unit_of(meta.name):
            units[-1].append(meta)
        else:
            units.append([meta])
    groups: list[list[TensorMeta]] = []
    size = 0
    for unit in units:
        unit_size = sum(_aligned(m.nbytes) for m in unit)
        if not groups or size + unit_size > bucket_bytes:
            groups.append([])
            size = 0
        groups[-1].extend(unit)
        size += unit_size
    buckets = []
    for group in groups:
        offsets, end = [], 0
        for meta in group:
            offsets.append(end)
            end += _aligned(meta.nbytes)
        buckets.append(Bucket(tuple(group), tuple(offsets), end))
    return buckets


class SyncGroup:
    """Rank 0 sends, the other ranks receive. Rank 0 hosts the rendezvous store at host:port."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, timeout_s: float = 600.0):
        timeout = timedelta(seconds=timeout_s)
        store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda":
            self.group = dist.ProcessGroupNCCL(store, rank, world_size)
        else:
            self.group = dist.ProcessGroupGloo(store, rank, world_size, timeout)
        self.rank = rank

    def broadcast(self, buffer: torch.Tensor) -> None:
        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.group.broadcast([buffer], options).wait()

    def barrier(self) -> None:
        self.group.allreduce([torch.zeros(1, device=self.device)]).wait()


class BucketChannel:
    """One end of the bucket stream: the sender (actor rank 0) or a receiver (an engine).

    `shared_file`: the /dev/shm file of the shared buffer (shared_memory), made by the sender with
    `create_shared_file` before it joins the group; None to broadcast the buffer (collective)."""

    def __init__(self, group: SyncGroup, buckets: list[Bucket], shared_file: str | None = None):
        self.group, self.buckets, self.shared = group, buckets, shared_file is not None
        size = buffer_bytes(buckets)
        if shared_file is None:
            self.buffer = torch.empty(size, dtype=torch.uint8, device=group.device)
        else:
            group.barrier()  # the sender has joined, so its file exists
            if not Path(shared_file).is_file():  # from_file would make a new, empty one: the sync would load zeros
                raise FileNotFoundError(f"weight sync: {shared_file} is gone; its name must stay until every "
                                        "engine has opened its channel")
            self.buffer = torch.from_file(shared_file, shared=True, size=size, dtype=torch.uint8)
        self.ready = torch.zeros(1, device=group.device)  # the shared_memory "bucket written" signal

    def _transfer(self, bucket: Bucket) -> None:
        self.group.broadcast(self.ready if self.shared else self.buffer[: bucket.nbytes])

    def send(self, named_tensors: Iterator[tuple[str, torch.Tensor]]) -> None:
        """Fill and send each bucket from (name, tensor) pairs in layout order, one tensor held at a time."""
        for index, bucket in enumerate(self.buckets):
            if self.shared and index > 0:
                self.group.barrier()  # the engines have loaded the previous bucket from the buffer
            views = bucket.views(self.buffer)
            with torch.no_grad():
                for meta in bucket.metas:
                    name, tensor = next(named_tensors)
                    if name != meta.name:
                        raise RuntimeError(f"weight sync: expected {meta.name}, the actor gave {name}")
                    views[name].copy_(tensor)
            self._transfer(bucket)
        if self.shared and self.buckets:
            self.group.barrier()

    def receive(self) -> Iterator[dict[str, torch.Tensor]]:
        """Each bucket as views by name, valid until the next is asked for (load it before)."""
        for bucket in self.buckets:
            self._transfer(bucket)
            yield bucket.views(self.buffer)
            if self.shared:
                self.group.barrier()


def buffer_bytes(buckets: list[Bucket]) -> int:
    """The bucket buffer's size: the largest bucket."""
    return max((b.nbytes for b in buckets), default=0)


def create_shared_file(path: str, nbytes: int) -> None:
    Path(path).write_bytes(b"")
    os.truncate(path, nbytes)


def shared_memory_room(nbytes: int, folder: str = "/dev/shm") -> bool:
    """Whether `folder` is a memory file system with room for `nbytes` more (and a margin)."""
    if not os.path.isdir(folder):
        return False
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize > nbytes * 1.1 + (64 << 20)
