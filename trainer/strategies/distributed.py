"""Process-group plumbing for data-parallel actor workers (one rank per worker).

Rank 0 picks the rendezvous address on its own node; every rank then joins with
`init_distributed`. gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist


def rendezvous_address() -> tuple[str, int]:
    """This node's IP and a free TCP port, for the other ranks to reach rank 0."""
    try:
        import ray

        host = ray.util.get_node_ip_address()
    except Exception:  # not inside Ray: a single machine
        host = "127.0.0.1"
    with socket.socket() as s:
        s.bind(("", 0))
        return host, s.getsockname()[1]


def init_distributed(rank: int, world_size: int, host: str, port: int, timeout_s: float = 600.0) -> None:
    if dist.is_initialized():
        return
    from datetime import timedelta

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{host}:{port}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))
    # What torchrun would set; DeepSpeed reads them.
    hosts: list[str | None] = [None] * world_size
    dist.all_gather_object(hosts, socket.gethostname())
    same_node = [r for r, h in enumerate(hosts) if h == hosts[rank]]
    # Ray gives each GPU worker its own CUDA_VISIBLE_DEVICES, so its device is always cuda:0.
    local_rank = 0 if torch.cuda.is_available() else same_node.index(rank)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(local_rank),
                      LOCAL_WORLD_SIZE=str(len(same_node)), MASTER_ADDR=host, MASTER_PORT=str(port))


def all_reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """Sum each value over ranks; every rank must pass the same keys in the same order."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return dict(values)
    keys = list(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist()))
