"""The memory plan's activation + logit estimate against the measured peak of one actor forward + backward.

    python bench/bench_memory.py                       # SmolLM2-135M-Instruct (model.path=smollm2), float32, CPU
    python bench/bench_memory.py --shapes 2x128,4x256 --settings 0,1024,1024+gc

For each micro-batch shape (rows x tokens per row: a quarter prompt, the rest response, random distinct
tokens) and each setting (an actor.logits_chunk_size; `+gc`: with gradient checkpointing), one forward +
backward of the actor's loss path as ActorWorker.update runs it: trainer.modeling.response_logprobs (with
entropy), the ppo_clip loss against its own detached log-probs, token_mean aggregation, backward.
Gradients are allocated (zeros) before, so the measurement holds what the plan calls activations and
logits (with the LM head's weight gradient before it is added to .grad), not the gradients themselves.

Memory: the peak resident set size during the pass (VmHWM, reset through /proc/self/clear_refs just
before it) minus the RSS before it. The script runs itself with MALLOC_MMAP_THRESHOLD_=65536, so glibc
maps every tensor above 64 KiB on its own and returns it when freed: RSS then follows the live tensors
instead of keeping what an earlier pass freed. Estimate: trainer.memory_plan.activation_bytes +
logit_bytes for the same tokens, model.dtype float32.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

# Runs from a checkout without installing the package.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MMAP_THRESHOLD = "65536"
GIB = 1 << 30


def rss() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) * 1024


def peak_rss() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) * 1024


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def random_batch(rows: int, length: int, vocab: int, seed: int):
    import torch

    from trainer.batch import TrainBatch

    generator = torch.Generator().manual_seed(seed)
    prompt = max(1, length // 4)
    ids = torch.randint(3, vocab, (rows, length), generator=generator).tolist()  # distinct rows: no shared prompt
    batch = TrainBatch.from_sequences([r[:prompt] for r in ids], [r[prompt:] for r in ids], pad_id=0)
    batch.advantages = torch.randn(rows, generator=generator)  # one per row, as GRPO gives them
    return batch


def loss_pass(model, batch, chunk: int) -> None:
    """One micro-batch of ActorWorker.update: log-probs with entropy, ppo_clip on-policy, backward."""
    from trainer.algorithms import aggregate, get_policy_loss
    from trainer.algorithms.policy_loss import PolicyInputs
    from trainer.modeling import response_logprobs

    logp, entropy = response_logprobs(model, batch, 1.0, with_entropy=True, chunk_size=chunk, share_prompts=False)
    mask = batch.response_mask
    token_loss, _ = get_policy_loss("ppo_clip")(logp, PolicyInputs(logp.detach(), batch.advantages, mask))
    loss = aggregate(token_loss, mask, "token_mean", num_tokens=mask.sum(), num_seqs=len(batch), max_len=mask.shape[1])
    loss.backward()
    float((entropy.detach() * mask).sum())  # the actor reads it after backward, so its graph lives until then


def measure(model, rows: int, length: int, chunk: int, vocab: int) -> tuple[float, float]:
    """(peak GiB above the RSS before the pass, seconds)."""
    batch = random_batch(rows, length, vocab, seed=rows * 1000 + length)
    gc.collect()
    before = rss()
    reset_peak()
    start = time.time()
    loss_pass(model, batch, chunk)
    seconds = time.time() - start
    peak = peak_rss() - before
    for param in model.parameters():
        param.grad.zero_()  # kept allocated: the next pass accumulates into them
    return peak / GIB, seconds


def estimate(shape, rows: int, length: int, chunk: int, checkpointing: bool) -> tuple[float, float]:
    from trainer.memory_plan import activation_bytes, logit_bytes

    tokens, response = rows * length, rows * (length - max(1, length // 4))
    return (activation_bytes(shape, tokens, 4, checkpointing) / GIB,
            logit_bytes(shape, tokens, response, chunk, 4) / GIB)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the prepared SmolLM2-135M-Instruct)")
    parser.add_argument("--shapes", default="2x128,4x256,8x256", help="micro-batches, rows x tokens per row")
    parser.add_argument("--settings", default="0,1024,1024+gc",
                        help="actor.logits_chunk_size values (0 = plain head); +gc: with gradient checkpointing")
    args = parser.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD:  # glibc reads it at start: run again with it
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    import json

    import torch

    from trainer.memory_plan import model_shape
    from trainer.modeling import load_causal_lm
    from trainer.smollm2 import prepare_smollm2

    torch.set_num_threads(1)
    torch.manual_seed(0)
    folder = args.model or str(prepare_smollm2())
    shape = model_shape(json.loads((Path(folder) / "config.json").read_text()), Path(folder).name)
    model = load_causal_lm(folder, "float32")
    model.train()
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    measure(model, 1, 16, 0, shape.vocab)  # warm-up: first-call allocations (kernels, caches) out of the table
    print(f"{folder} | cpu float32, 1 thread | memory: peak RSS (VmHWM) during one forward + backward minus RSS "
          f"before it, gradients preallocated | estimate: trainer/memory_plan.py")
    print(f"{'rows x len':>10} {'chunk':>9} {'est act':>8} {'est logits':>10} {'est GiB':>8} {'measured':>9} "
          f"{'meas/est':>8} {'s':>6}")
    for spec in args.shapes.split(","):
        rows, length = (int(x) for x in spec.split("x"))
        for setting in args.settings.split(","):
            chunk, checkpointing = int(setting.removesuffix("+gc")), setting.endswith("+gc")
            if checkpointing:
                model.gradient_checkpointing_enable()  # as ActorWorker does for actor.gradient_checkpointing
            act, logits = estimate(shape, rows, length, chunk, checkpointing)
            measured, seconds = measure(model, rows, length, chunk, shape.vocab)
            if checkpointing:
                model.gradient_checkpointing_disable()
            print(f"{spec:>10} {setting:>9} {act:>8.3f} {logits:>10.3f} {act + logits:>8.3f} {measured:>9.3f} "
                  f"{measured / (act + logits):>8.2f} {seconds:>6.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
