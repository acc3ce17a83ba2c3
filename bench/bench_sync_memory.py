"""Peak extra memory and seconds on the sending rank, against model size, for:
- weight sync: the bucketed path (rollout.weight_sync=shared_memory or collective) and the old whole-model
  gather (ActorWorker.weights, what object_store still does) on top of which Ray's object store adds a copy;
- checkpoint: sharded (each rank writes its own shard) and the old full gather of model and optimiser state
  to rank 0 (get_state_dict with full_state_dict=True, cpu_offload=True).

Setting: 2 FSDP2 ranks over gloo and one HF rollout engine, each its own process, one thread each, on
random-init Llama models of hidden 1024 (a layer is 16.8M parameters, 67 MB in float32) whose size is set
by their number of layers. "Extra" is the peak resident memory while the operation runs, sampled every
millisecond, minus the resident memory just before it.

    python bench/bench_sync_memory.py --sizes 30,120,400 --bucket-mb 64
    python bench/bench_sync_memory.py --sizes 30,120,400 --mode collective --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HIDDEN, INTERMEDIATE, VOCAB = 1024, 4096, 8192
PER_LAYER = 4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTERMEDIATE + 2 * HIDDEN
EMBED = VOCAB * HIDDEN


def layers_for(millions: float) -> int:
    return max(1, round((millions * 1e6 - EMBED) / PER_LAYER))


def build_model(folder: Path, layers: int) -> int:
    """A random-init Llama folder (tied embeddings); returns its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=layers,
                         num_attention_heads=16, num_key_value_heads=16, vocab_size=VOCAB, tie_word_embeddings=True,
                         max_position_embeddings=256)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.to_empty(device="cpu")
    model.tie_weights()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.uniform_(-0.02, 0.02, generator=generator)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


class PeakRss:
    """Peak resident memory of this process above its level at entry, sampled by a thread."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s, self.page = interval_s, os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.base = self.peak = self.rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        self.start = time.perf_counter()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval_s)

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.rss())
        self.extra = self.peak - self.base


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def actor_rank(rank: int, jobs: list[dict], dist_port: int, checkpoints: bool, barrier, layouts, results) -> None:
    """One FSDP2 rank: for each model size, a new actor worker; rank 0 reports what it measured."""
    import torch

    torch.set_num_threads(1)
    from trainer.config import ActorConfig, AlgorithmConfig
    from trainer.workers.actor import ActorWorker

    for index, job in enumerate(jobs):
        worker = ActorWorker(job["folder"], actor=ActorConfig(strategy="fsdp2", threads=1),
                             algorithm=AlgorithmConfig(), dtype="float32", seed=0, max_len=8, rank=rank, world_size=2)
        worker.init_distributed("127.0.0.1", dist_port)  # the process group once; a strategy per worker
        layout = worker.weight_layout()
        if rank == 0:
            layouts.put(layout)
        worker.open_weight_sync("127.0.0.1", job["sync_port"], 2, layout, job["bucket_bytes"], job["shared_file"])
        barrier.wait()  # every side has mapped the shared buffer
        if rank == 0 and job["shared_file"]:
            Path(job["shared_file"]).unlink()
        out = {}
        barrier.wait()
        with PeakRss() as sync:
            worker.send_weights()
        out["sync_new"] = sync
        barrier.wait()
        with PeakRss() as old_sync:
            full = worker.weights()
        out["sync_old"] = old_sync
        checksum = sum(float(t.double().sum()) for t in full.values()) if rank == 0 else None
        del full
        if checkpoints:
            out.update(measure_checkpoints(worker, barrier, job["checkpoint_dir"]))
        if rank == 0:
            results.put((index, "actor", {key: {"extra_mb": v.extra / 2**20, "seconds": v.seconds}
                                          for key, v in out.items()} | {"checksum": checksum, "layout": layout}))
        del worker


def measure_checkpoints(worker, barrier, folder: str) -> dict:
    import torch

    out = {}
    # One optimiser step, so a checkpoint holds Adam's moments too.
    model = worker.strategy.model
    loss = model(input_ids=torch.arange(16).view(1, 16)).logits.float().pow(2).mean()
    worker.strategy.backward(loss)
    worker.strategy.optimizer_step(1.0)
    barrier.wait()
    with PeakRss() as checkpoint:
        worker.save_checkpoint(folder)  # one folder all ranks write to
    out["checkpoint_new"] = checkpoint
    barrier.wait()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    with PeakRss() as old_checkpoint:
        state = get_state_dict(model, worker.strategy.optimizer,
                               options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    out["checkpoint_old"] = old_checkpoint
    del state
    return out


def engine(jobs: list[dict], checkpoints: bool, barrier, layouts, results) -> None:
    """The HF rollout engine: for each model size, a new worker that receives one sync."""
    import torch

    torch.set_num_threads(1)
    from trainer.workers.rollout import RolloutWorker

    for index, job in enumerate(jobs):
        worker = RolloutWorker(job["folder"], engine="hf", dtype="float32", seed=0, threads=1)
        worker.open_weight_sync("127.0.0.1", job["sync_port"], 1, 2, layouts.get(timeout=600), job["bucket_bytes"],
                                job["shared_file"])
        barrier.wait()
        barrier.wait()
        worker.receive_weights()
        barrier.wait()
        if checkpoints:  # the actor's ranks measure their checkpoints (two more barriers each)
            barrier.wait()
            barrier.wait()
        results.put((index, "engine", sum(float(t.double().sum()) for t in worker.weights().values())))
        del worker


def measure(sizes: list[float], bucket_mb: float, mode: str, scratch: Path, checkpoints: bool) -> list[dict]:
    """Every size in one set of processes (2 actor ranks, 1 engine), a fresh worker per size."""
    jobs, params = [], []
    for millions in sizes:
        layers = layers_for(millions)
        params.append(build_model(scratch / f"model-{layers}", layers))
        jobs.append({"folder": str(scratch / f"model-{layers}"), "sync_port": free_port(),
                     "bucket_bytes": int(bucket_mb * 2**20), "checkpoint_dir": str(scratch / f"checkpoint-{layers}"),
                     "shared_file": f"/dev/shm/bench-weights-{uuid.uuid4().hex[:8]}" if mode == "shared_memory" else None})
    context = mp.get_context("spawn")
    barrier, layouts, results = context.Barrier(3), context.Queue(), context.Queue()
    dist_port = free_port()
    processes = [context.Process(target=actor_rank, args=(r, jobs, dist_port, checkpoints, barrier, layouts, results))
                 for r in range(2)]
    processes.append(context.Process(target=engine, args=(jobs, checkpoints, barrier, layouts, results)))
    for process in processes:
        process.start()
    got: dict[tuple[int, str], object] = {}
    for _ in range(2 * len(jobs)):
        index, kind, value = results.get(timeout=1800)
        got[index, kind] = value
    for process in processes:
        process.join(timeout=120)
    for job in jobs:
        if job["shared_file"]:
            Path(job["shared_file"]).unlink(missing_ok=True)
    from trainer.rollout.weight_sync import buffer_bytes, plan_buckets

    rows = []
    for index, (job, count) in enumerate(zip(jobs, params)):
        actor = dict(got[index, "actor"])
        layout, checksum, engine_sum = actor.pop("layout"), actor.pop("checksum"), got[index, "engine"]
        rows.append({
            "params_m": count / 1e6, "layers": layers_for(sizes[index]), "model_mb": count * 4 / 2**20, "mode": mode,
            "bucket_mb": bucket_mb, "buffer_mb": buffer_bytes(plan_buckets(layout, job["bucket_bytes"])) / 2**20,
            "largest_tensor_mb": max(m.nbytes for m in layout) / 2**20, **actor,
            "engine_matches": abs(engine_sum - checksum) <= 1e-6 * max(1.0, abs(engine_sum)),
        })
    return rows


def describe(row: dict) -> str:
    def cell(key: str) -> str:
        return f"+{row[key]['extra_mb']:5.0f} MB {row[key]['seconds']:5.2f} s" if key in row else "-"

    return (f"{row['params_m']:4.0f}M ({row['model_mb']:5.0f} MB fp32, shard {row['model_mb'] / 2:4.0f} MB) | "
            f"sync {row['mode']} (buffer {row['buffer_mb']:.0f} MB): {cell('sync_new')} | old full gather: "
            f"{cell('sync_old')} | checkpoint sharded: {cell('checkpoint_new')} | old full: {cell('checkpoint_old')} | "
            f"engine = actor: {row['engine_matches']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="30,120,400", help="model sizes in millions of parameters")
    parser.add_argument("--bucket-mb", type=float, default=64)
    parser.add_argument("--mode", default="shared_memory", choices=["shared_memory", "collective"])
    parser.add_argument("--no-checkpoints", action="store_true", help="measure the weight sync only")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Freed tensors go back to the system at once, so resident memory follows what is alive.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as scratch:
        rows = measure([float(s) for s in args.sizes.split(",")], args.bucket_mb, args.mode, Path(scratch),
                       not args.no_checkpoints)
    for row in rows:
        print(describe(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
