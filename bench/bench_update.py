"""Peak memory and tokens/s of one actor update, plain LM head (logits_chunk_size=0) vs chunked.

    python bench/bench_update.py                                  # tiny model (built locally)
    python bench/bench_update.py --model PATH                     # a model folder, e.g. SmolLM2-135M-Instruct
    python bench/bench_update.py --qwen05b-random                 # Qwen2.5-0.5B's shape, random init
    python bench/bench_update.py --qwen05b-random --device cuda --dtype bfloat16 --batch 16 --response-len 2048
    python bench/bench_update.py --model PATH --batch 16 --group 4 --share both   # prompt-once forward off vs on
    python bench/bench_update.py --model PATH --chunks 1024 --lora 0,16           # full fine-tuning vs LoRA rank 16

Each setting runs in a process of its own through `ActorWorker.update` (forward, backward, AdamW step:
what the trainer runs): a small warm-up update first (allocates gradients and Adam state), then one
timed update of `--batch` sequences of `--prompt-len` + `--response-len` random tokens, in one
micro-batch unless `--max-tokens` or `--micro-batch` split it. Memory: on GPU the peak of
torch.cuda.max_memory_allocated during the update, minus what was allocated before it; on CPU the
peak resident set size during the update (VmHWM, reset just before it) minus the RSS before it.
Tokens/s counts prompt + response tokens (as the trainer's update tokens/s does). The old log-probs
come from `ActorWorker.log_probs` before the update (its time is shown, not counted in the update).
`--group N` gives every N consecutive rows one prompt (GRPO's n); `--share` sets
actor.share_prompt_forward (both: one row each). TFLOP/s counts the matmuls the update runs (forward
and backward, 3x the forward): 6 x non-embedding parameters per token run, 6 x layers x width x s^2
per row for causal attention, 6 x vocab x width per position the LM head runs on; the prompt-once
forward runs a group's prompt once. MFU divides by `--peak-tflops` (default: the dense bf16 peak of an
H100/H200, 989, on those GPUs; none otherwise). The optimiser step is in the time, not in the count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs from a checkout without installing the package.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Qwen2.5-0.5B's published config.json (architecture only; the weights here are random).
QWEN05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
               num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
               rms_norm_eps=1e-6, tie_word_embeddings=True)


def qwen05b_random(folder: Path) -> str:
    """Build (once) a random-init model with Qwen2.5-0.5B's config; saved in bf16 to halve the disk."""
    if (folder / "config.json").exists():
        return str(folder)
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN05B)).to(torch.bfloat16)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    tmp.rename(folder)
    return str(folder)


def tiny_model(folder: Path) -> str:
    from trainer.config import TinyModelConfig
    from trainer.tiny_model import build_tiny_model

    return str(build_tiny_model(TinyModelConfig(), folder, seed=0))


def memory_now(device: str) -> int:
    import torch

    if device == "cuda":
        return torch.cuda.memory_allocated()
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) * 1024


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def peak(device: str) -> int:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) * 1024


def update_flops(model, batch, args) -> float:
    """Matmul FLOPs of one update (forward + backward) on `batch`, as the docstring counts them."""
    config = model.config.get_text_config()
    embeddings = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) for p in m.parameters()}
    body = sum(p.numel() for p in model.parameters() if id(p) not in embeddings)
    width = config.num_attention_heads * getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    rows, group = len(batch), args.group if args.share == "on" else 1
    prompt, response = args.prompt_len, args.response_len
    tokens = rows // group * prompt + rows * response
    attention = rows // group * prompt**2 + rows * ((prompt + response) ** 2 - prompt**2)
    head_positions = rows * response if args.chunk else tokens
    return 6 * body * tokens + 6 * config.num_hidden_layers * width * attention + 6 * config.vocab_size * config.hidden_size * head_positions


def run_one(args) -> dict:
    """One setting, in this process: warm-up update, then the measured one."""
    import torch

    from trainer.batch import TrainBatch
    from trainer.config import ActorConfig, AlgorithmConfig, LoraConfig
    from trainer.workers.actor import ActorWorker

    micro = args.micro_batch or args.batch
    actor_cfg = ActorConfig(lr=1e-5, mini_batch_size=args.batch, micro_batch_size=micro, threads=args.threads,
                            logits_chunk_size=args.chunk, max_tokens_per_micro_batch=args.max_tokens,
                            gradient_checkpointing=args.gradient_checkpointing, share_prompt_forward=args.share == "on",  # off: never
                            lora=LoraConfig(rank=args.lora_rank, alpha=2.0 * args.lora_rank))
    actor = ActorWorker(args.model_path, actor=actor_cfg, algorithm=AlgorithmConfig(),
                        dtype=args.dtype, seed=0, max_len=args.prompt_len + args.response_len)
    vocab = actor.model.config.get_text_config().vocab_size
    generator = torch.Generator().manual_seed(0)

    def batch_of(rows: int, prompt_len: int, response_len: int, group: int = 1) -> TrainBatch:
        ids = torch.randint(vocab, (rows, prompt_len + response_len), generator=generator).tolist()
        prompts = [ids[row - row % group][:prompt_len] for row in range(rows)]
        batch = TrainBatch.from_sequences(prompts, [r[prompt_len:] for r in ids], pad_id=0)
        batch.advantages = torch.randn(rows, generator=generator)
        return batch

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    warm = batch_of(1, 8, 8)
    warm.old_logprobs = actor.log_probs(warm, 1.0)
    actor.update(warm, 1.0)
    batch = batch_of(args.batch, args.prompt_len, args.response_len, args.group)
    sync()
    start = time.perf_counter()
    batch.old_logprobs = actor.log_probs(batch, 1.0)
    sync()
    logprob_s = time.perf_counter() - start
    before = memory_now(args.device)
    reset_peak(args.device)
    start = time.perf_counter()
    metrics = actor.update(batch, 1.0)
    sync()
    update_s = time.perf_counter() - start
    tokens = int((batch.prompt_lens + batch.response_lens).sum())
    flops = update_flops(actor.model, batch, args)
    return {"chunk": args.chunk, "share": args.share, "lora": args.lora_rank, "tflops": flops / update_s / 1e12, "update_s": update_s, "tokens_per_s": tokens / update_s, "logprob_s": logprob_s,
            "peak_delta_gib": (peak(args.device) - before) / 2**30, "peak_gib": peak(args.device) / 2**30,
            "loss": metrics["policy_loss"], "grad_norm": metrics["grad_norm"], "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", help="a model folder (default: the embedded tiny model)")
    which.add_argument("--qwen05b-random", action="store_true", help="random-init Qwen2.5-0.5B shape (vocab 151,936)")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "bench-update"),
                        help="where the tiny / Qwen-shaped models are built once")
    parser.add_argument("--batch", type=int, default=4, help="sequences in the update (one mini-batch)")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--response-len", type=int, default=256)
    parser.add_argument("--chunks", default="0,1024,256", help="logits_chunk_size values to compare (0 = plain)")
    parser.add_argument("--micro-batch", type=int, default=0, help="actor.micro_batch_size (default: --batch)")
    parser.add_argument("--max-tokens", type=int, default=None, help="actor.max_tokens_per_micro_batch")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--group", type=int, default=1, help="rows per prompt (GRPO's n)")
    parser.add_argument("--share", choices=["off", "on", "both"], default="off", help="actor.share_prompt_forward")
    parser.add_argument("--lora", default="0", help="actor.lora.rank values to compare (0 = full fine-tuning; "
                        "alpha = 2 x rank, every linear layer of the decoder)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    parser.add_argument("--chunk", type=int, help=argparse.SUPPRESS)  # set in the per-setting child process
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--lora-rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.chunk is not None:  # child: one setting
        print(json.dumps(run_one(args)))
        return

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    if args.qwen05b_random:
        model_path, name = qwen05b_random(cache / "qwen05b-random"), "Qwen2.5-0.5B shape, random init"
    elif args.model:
        model_path, name = args.model, args.model
    else:
        model_path, name = tiny_model(cache / "tiny"), "embedded tiny Qwen2"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # load_causal_lm takes the GPU whenever it sees one
    memory = "GPU: max_memory_allocated" if args.device == "cuda" else "CPU: peak RSS (VmHWM)"
    print(f"{name} | {args.device} {args.dtype}, {args.threads} threads | {args.batch} x ({args.prompt_len} prompt "
          f"+ {args.response_len} response) tokens, micro-batch {args.micro_batch or args.batch}"
          f"{f', max {args.max_tokens} tokens' if args.max_tokens else ''} | memory = {memory} during the update, "
          "minus before it")
    peak_tflops = args.peak_tflops
    if peak_tflops is None and args.device == "cuda":
        import torch

        peak_tflops = 989.0 if any(gpu in torch.cuda.get_device_name() for gpu in ("H100", "H200")) else None
    print(f"{'logits_chunk_size':>18} {'share':>5} {'lora':>4} {'update s':>9} {'tokens/s':>9} {'peak +GiB':>10} {'peak GiB':>9} "
          f"{'log-probs s':>12} {'grad norm':>10} {'TFLOP/s':>8} {'MFU':>6}")
    forwarded = ["--batch", str(args.batch), "--prompt-len", str(args.prompt_len), "--response-len",
                 str(args.response_len), "--micro-batch", str(args.micro_batch), "--device", args.device,
                 "--dtype", args.dtype, "--threads", str(args.threads), "--model-path", model_path,
                 "--group", str(args.group)]
    if args.max_tokens:
        forwarded += ["--max-tokens", str(args.max_tokens)]
    if args.gradient_checkpointing:
        forwarded.append("--gradient-checkpointing")
    shares = ["off", "on"] if args.share == "both" else [args.share]
    settings = [(int(c), share, int(rank)) for c in args.chunks.split(",") for share in shares
                for rank in args.lora.split(",")]
    for chunk, share, rank in settings:
        done = subprocess.run([sys.executable, os.path.abspath(__file__), *forwarded, "--chunk", str(chunk),
                               "--share", share, "--lora-rank", str(rank)], env=env, capture_output=True, text=True,
                              cwd=ROOT)
        if done.returncode != 0:
            print(f"{chunk:>18} {share:>5} {rank:>4} failed (exit {done.returncode}):")
            print("\n".join(done.stderr.strip().splitlines()[-12:]))
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        label = "0 (plain)" if chunk == 0 else str(chunk)
        mfu = f"{100 * r['tflops'] / peak_tflops:5.1f}%" if peak_tflops else "-"
        print(f"{label:>18} {share:>5} {rank:>4} {r['update_s']:9.2f} {r['tokens_per_s']:9.0f} {r['peak_delta_gib']:10.2f} "
              f"{r['peak_gib']:9.2f} {r['logprob_s']:12.2f} {r['grad_norm']:10.5f} {r['tflops']:8.2f} {mfu:>6}",
              flush=True)


if __name__ == "__main__":
    main()
