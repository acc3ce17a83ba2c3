"""The peer baseline: TRL's GRPOTrainer on bench_step.py's settings (same model folder, prompts, rewards, batch).

    pip install --no-deps trl==1.16.0          # not a dependency of this project; its own deps are already here
    python bench/bench_trl.py --setting tiny      [--steps 10] [--warmup 2]
    python bench/bench_trl.py --setting smollm2

One optimiser step per rollout batch (batch = prompts x n, one generation per step, one iteration), KL 0
(beta=0, so no reference model), the same temperature, lengths, learning rate and gradient clip, HF
generate on CPU in fp32. The prompts are this project's rendered prompts (chat template included) as
plain text, and the reward is this project's reward mix for the recipe. Prints start-up to the first
step, then the median step time over the timed steps with its range, split into TRL's generate+score
(`_generate_and_score_completions`) and the rest (forward, backward, optimiser).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

START = time.time()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_step import config, spread  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    import tempfile

    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from trainer.loop import Trainer

    cfg = config(args.setting, ["engine.ray=false"], num_eval=1)
    torch.set_num_threads(cfg.actor.threads)
    ours = Trainer(cfg)  # data, prompt rendering and rewards only; no workers start
    samples = ours.train_samples
    tokenizer = AutoTokenizer.from_pretrained(ours.tokenizer_path)
    rows = [{"prompt": ours.prompts.tokenizer.decode(ours.prompts.ids(s)), "index": i} for i, s in enumerate(samples)]

    def reward(completions, index, **_):
        return list(ours.scorer.composer.score(list(completions), [samples[i] for i in index]).scores)

    n, batch = cfg.rollout.n, cfg.data.prompts_per_step * cfg.rollout.n
    stop = ours.prompts.chat.stop_ids
    tokenizer.eos_token_id = stop[0]  # the same stop token the trainer's engines use
    trl_args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"), per_device_train_batch_size=batch, num_generations=n,
        gradient_accumulation_steps=1, num_iterations=1, max_completion_length=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature, top_p=1.0, top_k=0, beta=0.0, learning_rate=cfg.actor.lr,
        max_grad_norm=cfg.actor.grad_clip, lr_scheduler_type="constant", warmup_steps=0,
        max_steps=args.warmup + args.steps, logging_steps=10_000, report_to="none", save_strategy="no",
        use_cpu=True, bf16=False, seed=cfg.trainer.seed, loss_type="dapo", shuffle_dataset=True,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    steps: list[float] = []
    generate: list[float] = []
    first_step: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            first_step.append(time.time()) if not first_step else None
            self.began = time.time()

        def on_step_end(self, *_, **__):
            steps.append(time.time() - self.began)

    trl = GRPOTrainer(model=ours.base_model_path, reward_funcs=reward, args=trl_args,
                      train_dataset=Dataset.from_list(rows), processing_class=tokenizer, callbacks=[Clock()])
    timed = trl._generate_and_score_completions

    def generate_and_score(*a, **kw):
        clock = time.time()
        out = timed(*a, **kw)
        generate.append(time.time() - clock)
        return out

    trl._generate_and_score_completions = generate_and_score
    trl.train()
    ours.close()
    rest = [s - g for s, g in zip(steps, generate)]
    print(f"TRL {__import__('trl').__version__} GRPOTrainer | {cfg.data.prompts_per_step} prompts x {n}, "
          f"<= {cfg.rollout.max_new_tokens} new tokens, {args.steps} timed steps after {args.warmup}")
    print(f"start-up to the first step s: {first_step[0] - START:6.1f}")
    print("phase                 median s  (min-max)")
    print(f"  {'generate+score':<18} {spread(generate[args.warmup:])}")
    print(f"  {'update':<18} {spread(rest[args.warmup:])}")
    print(f"  {'step (wall)':<18} {spread(steps[args.warmup:])}")


if __name__ == "__main__":
    sys.exit(main())
