"""The quickstart with each newer policy loss, advantage estimator and rollout-correction mode: held-out
accuracy before and after RL, and the wall time, one run after another.

    .venv/bin/python bench/bench_losses.py [--only NAME ...] [--out DIR] [OVERRIDE ...]

Every variant trains with actor.mini_batch_size=128 (two optimiser steps per rollout batch of 256), so
the second step's ratio is off 1 and the losses' clipping, gates and trust regions act. Prints one table
row per run; bench/RESULTS.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

COMMON = ["actor.mini_batch_size=128", "tracking.wandb.mode=disabled"]
VARIANTS = {
    "ppo_clip": [],
    "ppo_clip_dual": ["algorithm.policy_loss_params={dual_clip: 3.0}"],
    "gspo": ["algorithm.policy_loss=gspo", "algorithm.eps_low=3e-4", "algorithm.eps_high=4e-4",
             "algorithm.loss_agg=seq_mean_token_mean"],
    "cispo": ["algorithm.policy_loss=cispo", "algorithm.eps_high=0.28"],
    "sapo": ["algorithm.policy_loss=sapo", "algorithm.loss_agg=seq_mean_token_mean"],
    "gmpo": ["algorithm.policy_loss=gmpo", "algorithm.eps_low=0.4", "algorithm.eps_high=0.4",
             "algorithm.loss_agg=seq_mean_token_mean"],
    "dppo_tv": ["algorithm.policy_loss=dppo_tv"],
    "dppo_kl": ["algorithm.policy_loss=dppo_kl", "algorithm.eps_low=0.05", "algorithm.eps_high=0.05"],
    "reinforce_pp": ["algorithm.advantage=reinforce_plus_plus"],
    "reinforce_pp_baseline": ["algorithm.advantage=reinforce_plus_plus_baseline"],
    "grpo_passk": ["algorithm.advantage=grpo_passk"],
    "correction_decoupled": ["algorithm.rollout_correction.mode=decoupled",
                             "algorithm.rollout_correction.reject=sequence"],
    "correction_bypass": ["algorithm.rollout_correction.mode=bypass"],
    "mismatch_budget": ["algorithm.mismatch_budget=1e-9"],
    "async": ["rollout.async_steps=1"],
    # RL with LoRA from the ppo_clip run's fully fine-tuned SFT model ({out}: --out): adapters on the 0.74M
    # random-init model cannot learn the answer format in SFT (45% greedy, no sampled completion scores).
    "lora": ["model.path={out}/ppo_clip/sft_model", "sft.steps=0", "actor.lora.rank=32", "actor.lora.alpha=64",
             "actor.lr=5e-4"],
    # The same on two FSDP2 actor ranks (Ray workers): the adapters and the frozen base sharded alike.
    "lora_fsdp2": ["model.path={out}/ppo_clip/sft_model", "sft.steps=0", "actor.lora.rank=32", "actor.lora.alpha=64",
                   "actor.lr=5e-4", "actor.strategy=fsdp2", "resources.actor.count=2", "resources.actor.num_cpus=0.5",
                   "engine.ray=true"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS), help="these variants only")
    parser.add_argument("--out", default="/tmp/bench_losses", help="a folder per run under it")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run (e.g. trainer.total_steps=50)")
    args = parser.parse_args()
    print("| variant | before | after | gain (points) | wall (s) |\n|---|---|---|---|---|", flush=True)
    for name in args.only or list(VARIANTS):
        out = Path(args.out) / name
        shutil.rmtree(out, ignore_errors=True)  # a fresh run each time
        command = [sys.executable, "-m", "trainer", f"trainer.output_dir={out}", "trainer.resume=never",
                   *COMMON, *(v.replace("{out}", args.out) for v in VARIANTS[name]), *args.overrides]
        clock = time.time()
        run = subprocess.run(command, capture_output=True, text=True)
        wall = time.time() - clock
        if run.returncode != 0:
            print(f"| {name} | failed (rc {run.returncode}): {run.stderr.strip().splitlines()[-1:]} | | | {wall:.0f} |")
            continue
        summary = json.loads((out / "summary.json").read_text())
        before, after = summary["eval_before"]["eval/acc"], summary["eval_after"]["eval/acc"]
        print(f"| {name} | {100 * before:.1f}% | {100 * after:.1f}% | {100 * (after - before):+.1f} | {wall:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
