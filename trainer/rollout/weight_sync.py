"""Actor -> rollout weight sync without Ray's object store or disk.

shared_memory (one host): actor rank 0 and every engine map the same files in /dev/shm, one flat
buffer per dtype. Each sync, rank 0 copies its weights into the buffer (one copy) and each engine
loads straight from views of it (no copy, no serialisation, no socket).

collective (across hosts, and GPUs): actor rank 0 and every rollout engine form their own small
process group (gloo on CPU, NCCL on GPU), separate from the actor's data-parallel group. Each sync,
rank 0 packs the full weights into one flat buffer per dtype and broadcasts it; each engine unpacks
views by the names and shapes it was given when the group opened, and loads them in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import os
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class TensorMeta:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return int(torch.Size(self.shape).numel())


def by_dtype(metas: list[TensorMeta]) -> dict[torch.dtype, list[TensorMeta]]:
    """The layout split into one group per dtype (one flat buffer each), in first-seen order."""
    groups: dict[torch.dtype, list[TensorMeta]] = {}
    for meta in metas:
        groups.setdefault(meta.dtype, []).append(meta)
    return groups


def unpack(group: list[TensorMeta], flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views by name into one dtype's flat buffer."""
    return {meta.name: part.view(meta.shape) for meta, part in zip(group, flat.split([m.numel for m in group]))}


def describe(named_tensors) -> list[TensorMeta]:
    """The layout of (name, tensor) pairs, e.g. a state dict's items()."""
    return [TensorMeta(name, tuple(t.shape), t.dtype) for name, t in named_tensors]


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

    def _broadcast(self, buffer: torch.Tensor) -> None:
        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.group.broadcast([buffer], options).wait()

    def send(self, state: dict[str, torch.Tensor]) -> None:
        for dtype in dict.fromkeys(t.dtype for t in state.values()):
            flat = torch.cat([t.detach().reshape(-1) for t in state.values() if t.dtype == dtype]).to(self.device)
            self._broadcast(flat)

    def receive(self, metas: list[TensorMeta]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for dtype, group in by_dtype(metas).items():
            flat = torch.empty(sum(m.numel for m in group), dtype=dtype, device=self.device)
            self._broadcast(flat)
            out.update(unpack(group, flat))
        return out


def layout_bytes(metas: list[TensorMeta]) -> int:
    return sum(m.numel * m.dtype.itemsize for m in metas)


class SharedWeights:
    """Views by name into flat buffers in shared memory, one file per dtype under `prefix`.

    The sender creates the files; receivers map them. Once every side has mapped them, `unlink` removes
    the names: the memory lives as long as a mapping does, so nothing is left behind if a process dies."""

    def __init__(self, metas: list[TensorMeta], prefix: str, create: bool):
        self.paths, self.views = [], {}
        for dtype, group in by_dtype(metas).items():
            size = sum(m.numel for m in group)
            path = f"{prefix}-{str(dtype).removeprefix('torch.')}"
            if create:
                Path(path).write_bytes(b"")
                os.truncate(path, size * dtype.itemsize)
            self.paths.append(path)
            self.views.update(unpack(group, torch.from_file(path, shared=True, size=size, dtype=dtype)))

    def write_one(self, name: str, tensor: torch.Tensor) -> None:
        with torch.no_grad():
            self.views[name].copy_(tensor)

    def unlink(self) -> None:
        for path in self.paths:
            Path(path).unlink(missing_ok=True)


def shared_memory_room(nbytes: int, folder: str = "/dev/shm") -> bool:
    """Whether `folder` is a memory file system with room for `nbytes` more (and a margin)."""
    if not os.path.isdir(folder):
        return False
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize > nbytes * 1.1 + (64 << 20)
