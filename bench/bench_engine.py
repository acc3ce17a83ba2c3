"""Engine throughput for the quickstart model: rollout tokens/s, update tokens/s, weight-sync seconds per step.

    python bench/bench_engine.py [--steps 8] [--warmup 2] [key=value ...]

Extra key=value arguments are config overrides (e.g. rollout.engine=hf engine.ray=false).
Runs the real workers (Ray actors + vLLM by default) on the random-init tiny model and
prints the mean over the timed steps; the first `--warmup` steps are not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

# Runs from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    args, overrides = parser.parse_known_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    from trainer.recipe_config import compose_config
    from trainer.loop import Trainer

    out = tempfile.mkdtemp(prefix="bench-engine-")
    cfg = compose_config([
        "recipe=quickstart", f"trainer.output_dir={out}", "sft.steps=0", "tracking.wandb.mode=disabled",
        "tracking.console=false", "data.num_eval=8", *overrides,
    ])
    trainer = Trainer(cfg)
    try:
        trainer.start_workers(trainer.base_model_path)
        rows = []
        for step in range(args.warmup + args.steps):
            metrics = trainer.step(step)
            if step >= args.warmup:
                rows.append(metrics)
    finally:
        trainer.close()

    def mean(key: str) -> float:
        return statistics.mean(r[key] for r in rows if key in r)

    completions = cfg.data.prompts_per_step * cfg.rollout.n
    print(f"engine: rollout={cfg.rollout.engine} ray={cfg.engine.ray} threads={cfg.rollout.threads}/{cfg.actor.threads} "
          f"| {completions} completions/step, max {cfg.rollout.max_new_tokens} new tokens, {args.steps} timed steps")
    print(f"rollout tokens/s:        {mean('throughput/rollout_tokens_per_s'):10.0f}   (response tokens / generate time)")
    print(f"update tokens/s:         {mean('throughput/update_tokens_per_s'):10.0f}   (prompt+response tokens / update time)")
    print(f"weight sync s/step:      {mean('time/sync'):10.3f}")
    print(f"generate s/step:         {mean('time/generate'):10.3f}")
    print(f"old log-probs s/step:    {mean('time/old_logprobs'):10.3f}")
    print(f"update s/step:           {mean('time/update'):10.3f}")
    print(f"step s:                  {mean('time/step'):10.3f}")
    print(f"mean response tokens:    {mean('response_len/mean'):10.1f}")


if __name__ == "__main__":
    sys.exit(main())
