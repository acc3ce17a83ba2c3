"""One RL step, phase by phase, on the two benchmark settings; start-up to the first step too.

    python bench/bench_step.py --setting tiny      [--steps 12] [--warmup 2] [key=value ...]
    python bench/bench_step.py --setting smollm2   [--steps 12] [--warmup 2] [key=value ...]
    python bench/bench_step.py --setting tiny --plain     # the same work in a plain single-process HF loop
    python bench/bench_step.py --setting tiny --standalone-vllm   # generation alone, a bare vLLM in-process
    python bench/bench_step.py --setting smollm2 --steps 0 --warmup 0    # start-up to the first step only
    python bench/bench_step.py --setting smollm2 --judge-latency 0.3     # rewards from a judge over HTTP

Settings (KL 0, no SFT, one optimiser step per rollout batch, as in bench/RESULTS.md's TRL comparison):
  tiny     the quickstart's embedded Qwen2, 16 prompts x 8 completions x <= 48 new tokens
  smollm2  SmolLM2-135M-Instruct (model.path=smollm2), 4 prompts x 4 x <= 32 new tokens
Extra key=value arguments are config overrides (e.g. rollout.engine=hf engine.ray=false, or
rollout.async_steps=1: generation then overlaps the previous step, and wait_rollouts is what it adds).

Prints the start-up split (workers, the evaluation before RL), then per phase the median seconds over
the timed steps with their range, the step's wall time as the controller sees it, tokens/s and the
bytes one weight sync moves. `--judge-latency S` swaps the math prompts and rule rewards for rubric-graded
questions scored by the `rubric` reward through a judge on loopback HTTP that answers each request after S
seconds (a remote judge's round trip, with no model behind it), so scoring costs as much as generating.
`--plain`
runs the same prompts, rewards and batch shape through `model.generate`, one log-prob forward (no
old log-probs pass) and AdamW in this process: the in-repo baseline that a framework must beat.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

START = time.time()
# Runs from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SETTINGS = {
    "tiny": ["recipe=quickstart", "data.prompts_per_step=16", "rollout.n=8", "rollout.max_new_tokens=48",
             "actor.mini_batch_size=128", "actor.micro_batch_size=128"],
    "smollm2": ["recipe=quickstart_smollm2", "data.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=32",
                "actor.mini_batch_size=16", "actor.micro_batch_size=16"],
}


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):7.3f}  ({min(values):.3f}-{max(values):.3f})"


def config(setting: str, overrides: list[str], num_eval: int):
    from trainer.recipe_config import compose_config

    out = tempfile.mkdtemp(prefix=f"bench-step-{setting}-")
    return compose_config([
        *SETTINGS[setting], f"trainer.output_dir={out}", "sft.steps=0", "algorithm.kl_coef=0",
        "tracking.wandb.mode=disabled", "tracking.console=false", f"data.num_eval={num_eval}", *overrides,
    ])


def run_trainer(cfg, steps: int, warmup: int) -> None:
    from trainer.loop import Trainer

    trainer = Trainer(cfg)
    try:
        built = time.time()
        trainer.start_workers(trainer.base_model_path)
        started = time.time()
        trainer.evaluate()
        evaluated = time.time()
        if steps + warmup == 0:  # start-up only: uses nothing newer than Trainer, so it also runs on old commits
            print_startup(trainer, built, started, evaluated)
            return
        rows, walls = [], []
        for step in range(warmup + steps):
            clock = time.time()
            metrics = trainer.step(step)
            if step >= warmup:
                rows.append(metrics)
                walls.append(time.time() - clock)
        sync_bytes = trainer.workers.weight_bytes()
    finally:
        trainer.close()
    print(f"setting: rollout={cfg.rollout.engine} ray={cfg.engine.ray} weight_sync={trainer.workers.sync_path} "
          f"| {cfg.data.prompts_per_step} prompts x {cfg.rollout.n}, <= {cfg.rollout.max_new_tokens} new tokens, "
          f"{steps} timed steps after {warmup}")
    print_startup(trainer, built, started, evaluated)
    print("phase                 median s  (min-max)")
    for key in ("generate", "reward", "old_logprobs", "reference", "update", "wait_rollouts", "sync"):
        values = [r[f"time/{key}"] for r in rows if f"time/{key}" in r]
        if values:
            print(f"  {key:<18} {spread(values)}")
    print(f"  {'step (wall)':<18} {spread(walls)}")
    print(f"rollout tokens/s:     {statistics.median(r['throughput/rollout_tokens_per_s'] for r in rows):8.0f}")
    print(f"update tokens/s:      {statistics.median(r['throughput/update_tokens_per_s'] for r in rows):8.0f}")
    print(f"weight sync MB/step:  {sync_bytes / 2**20:8.1f}   (buckets of rollout.sync_bucket_mb={cfg.rollout.sync_bucket_mb:g})")
    print(f"mean response tokens: {statistics.median(r['response_len/mean'] for r in rows):8.1f}")


def print_startup(trainer, built: float, started: float, evaluated: float) -> None:
    print(f"start-up s:  imports + config + data {built - START:6.1f}   workers {started - built:6.1f}   "
          f"evaluation ({len(trainer.eval_samples)} prompts) {evaluated - started:6.1f}   "
          f"total {evaluated - START:6.1f}")


def run_plain(cfg, steps: int, warmup: int) -> None:
    """Generate with HF, score, one forward+backward for the update (ratio 1, the on-policy PPO loss), AdamW."""
    import torch

    from trainer.algorithms import get_advantage
    from trainer.loop import Trainer
    from trainer.modeling import load_causal_lm

    cfg.engine.ray = False
    torch.set_num_threads(cfg.actor.threads)
    trainer = Trainer(cfg)  # prompts, sampler and rewards only; no workers are started
    model = load_causal_lm(trainer.base_model_path, cfg.model.dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.actor.lr)
    tokenizer, stop = trainer.prompts.tokenizer, trainer.prompts.chat.stop_ids
    n, walls, phases = cfg.rollout.n, [], {"generate": [], "update": []}
    print(f"plain loop: start-up {time.time() - START:.1f} s")
    for step in range(warmup + steps):
        samples = trainer.sampler.next_batch()
        clock = time.time()
        prompts = [trainer.prompts.ids(s) for s in samples]
        width = max(map(len, prompts))
        ids = torch.tensor([[trainer.pad_id] * (width - len(p)) + p for p in prompts]).repeat_interleave(n, 0)
        mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompts]).unsqueeze(1)).long()
        model.eval()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask.repeat_interleave(n, 0), do_sample=True,
                                 temperature=cfg.rollout.temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=cfg.rollout.max_new_tokens, eos_token_id=stop, pad_token_id=trainer.pad_id)
        generated = time.time()
        responses = out[:, width:]
        done = torch.isin(responses, torch.tensor(stop)).long().cumsum(1)
        response_mask = ((done == 0) | ((done == 1) & torch.isin(responses, torch.tensor(stop)))).float()
        texts = tokenizer.batch_decode(responses.masked_fill(response_mask == 0, trainer.pad_id), skip_special_tokens=True)
        scored = trainer.scorer.composer.score(texts, [s for s in samples for _ in range(n)])
        rewards = torch.tensor(scored.scores, dtype=torch.float32)
        advantages = get_advantage("grpo")(rewards, torch.arange(len(samples)).repeat_interleave(n), response_mask)
        model.train()
        full_mask = torch.cat([mask.repeat_interleave(n, 0), response_mask.long()], 1)
        logits = model(input_ids=out, attention_mask=full_mask).logits[:, width - 1 : -1].float()
        logp = logits.gather(-1, responses.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        ratio = torch.exp(logp - logp.detach())
        loss = -(ratio * advantages.unsqueeze(1) * response_mask).sum() / response_mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.actor.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            phases["generate"].append(generated - clock)
            phases["update"].append(time.time() - generated)
            walls.append(time.time() - clock)
    trainer.close()
    print("phase                 median s  (min-max)")
    for key, values in phases.items():
        print(f"  {key:<18} {spread(values)}")
    print(f"  {'step (wall)':<18} {spread(walls)}")


def run_standalone(cfg, steps: int, warmup: int) -> None:
    """The same prompts through a bare vLLM `LLM` in this process (no Ray, no trainer around it), with the
    engine settings and sampling parameters the trainer's vLLM engine uses: the floor for the generate phase."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.rollout.kv_cache_gib))
    import torch
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from trainer.loop import Trainer

    cfg.engine.ray = False
    torch.set_num_threads(cfg.rollout.threads)
    trainer = Trainer(cfg)  # prompts and sampler only
    longest = max(len(trainer.prompts.ids(s)) for s in trainer.train_samples)
    llm = LLM(model=trainer.base_model_path, dtype=cfg.model.dtype, seed=cfg.trainer.seed, enforce_eager=True,
              max_model_len=longest + cfg.rollout.max_new_tokens, skip_tokenizer_init=True, enable_prefix_caching=False,
              logprobs_mode="processed_logprobs", max_num_seqs=cfg.rollout.max_num_seqs)
    params = SamplingParams(n=cfg.rollout.n, temperature=cfg.rollout.temperature, max_tokens=cfg.rollout.max_new_tokens,
                            stop_token_ids=trainer.prompts.chat.stop_ids, logprobs=0, detokenize=False)
    walls, tokens = [], []
    for step in range(warmup + steps):
        prompts = [TokensPrompt(prompt_token_ids=trainer.prompts.ids(s)) for s in trainer.sampler.next_batch()]
        clock = time.time()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        if step >= warmup:
            walls.append(time.time() - clock)
            tokens.append(sum(len(c.token_ids) for o in outputs for c in o.outputs))
    trainer.close()
    print(f"standalone vLLM | {cfg.data.prompts_per_step} prompts x {cfg.rollout.n}, <= {cfg.rollout.max_new_tokens} "
          f"new tokens, {steps} timed calls after {warmup}")
    print(f"  {'generate':<18} {spread(walls)}")
    print(f"rollout tokens/s:     {statistics.median(t / w for t, w in zip(tokens, walls)):8.0f}")


# Rubric-graded questions for --judge-latency, in the healthbench layout (data.preprocess=healthbench).
JUDGE_RUBRICS = [{"criterion": "Gives the right sum", "points": 5}, {"criterion": "Shows the steps", "points": 3},
                 {"criterion": "States a wrong number", "points": -2}]


class RemoteJudge:
    """The judge server's generator for --judge-latency: each reply comes after `latency` seconds, its verdict
    a fixed function of the request (as a real judge's would be for the same request at temperature 0)."""

    def __init__(self, latency: float):
        self.latency = latency

    def generate(self, messages, **_params) -> dict:
        import hashlib

        time.sleep(self.latency)
        met = hashlib.sha256(repr(messages).encode()).digest()[0] % 2 == 0
        return {"text": f'{{"met": {str(met).lower()}}}', "finish_reason": "stop", "prompt_tokens": 1,
                "completion_tokens": 1}


def judge_overrides(latency: float, workdir: str) -> list[str]:
    """Config overrides for --judge-latency: the questions, the rubric reward, and a judge server started here."""
    import json

    from rewards.judge_server import create_app, serve_in_background

    url, _ = serve_in_background(app=create_app(generator=RemoteJudge(latency), served_model_name="remote"))
    rows = [{"prompt": f"What is {a} + {b}? Explain briefly.", "rubrics": JUDGE_RUBRICS}
            for a in range(3, 11) for b in range(2, 10)]
    path = os.path.join(workdir, "judged.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    judge = f"{{name: rubric, params: {{base_url: '{url}', model: remote, max_concurrency: 8}}}}"
    return [f"data.train={path}", f"data.eval={path}", "data.preprocess=healthbench",
            f"reward.tasks={{default: [{judge}]}}", "reward.accuracy_reward=rubric", "reward.correct_at={default: 0.5}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="tiny")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--eval", type=int, default=200, help="held-out prompts evaluated before the first step")
    parser.add_argument("--plain", action="store_true", help="a plain single-process HF loop on the same work")
    parser.add_argument("--standalone-vllm", action="store_true", help="only generate, with a bare vLLM in-process")
    parser.add_argument("--judge-latency", type=float, default=None,
                        help="seconds per request of a judge over HTTP scoring rubric-graded questions")
    args, overrides = parser.parse_known_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    if args.judge_latency is not None:
        overrides = judge_overrides(args.judge_latency, tempfile.mkdtemp(prefix="bench-judge-")) + overrides
    cfg = config(args.setting, overrides, args.eval)
    run = run_plain if args.plain else run_standalone if args.standalone_vllm else run_trainer
    run(cfg, args.steps, args.warmup)


if __name__ == "__main__":
    sys.exit(main())
