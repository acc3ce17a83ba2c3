"""Actor -> rollout weight sync over a collective group, without Ray's object store or disk.

Actor rank 0 and every rollout engine form their own small process group (gloo on CPU, NCCL
on GPU), separate from the actor's data-parallel group. Each sync, rank 0 packs the full
weights into one flat buffer per dtype and broadcasts it; each engine unpacks views by the
names and shapes it was given when the group opened, and loads them in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class TensorMeta:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


def describe(state: dict[str, torch.Tensor]) -> list[TensorMeta]:
    return [TensorMeta(name, tuple(t.shape), t.dtype) for name, t in state.items()]


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
        for dtype in dict.fromkeys(m.dtype for m in metas):
            group = [m for m in metas if m.dtype == dtype]
            sizes = [int(torch.Size(m.shape).numel()) for m in group]
            flat = torch.empty(sum(sizes), dtype=dtype, device=self.device)
            self._broadcast(flat)
            for meta, part in zip(group, flat.split(sizes)):
                out[meta.name] = part.view(meta.shape)
        return out
