"""Held-out evaluation: greedy accuracy, per task and overall, in the configured thinking mode."""

from __future__ import annotations

import numpy as np

from data.schema import Sample
from rewards.math_answer import final_boxed
from trainer.algorithms.bpo import auto_think_share
from trainer.collect import RolloutCollector
from trainer.rollout.sampling import SamplingSpec


def evaluate(collector: RolloutCollector, samples: list[Sample]) -> dict[str, float]:
    """Greedy accuracy on `samples`, in `rollout.eval_thinking_mode` (R-4B's auto / long / short)."""
    rollout = collector.cfg.rollout
    spec = SamplingSpec(n=1, temperature=0.0, max_new_tokens=rollout.eval_max_new_tokens,
                        stop_token_ids=collector.prompts.chat.stop_ids, seed=0)
    mode = {"auto": "", "long": "thinking", "short": "non_thinking"}[rollout.eval_thinking_mode]
    items = collector.sample(samples, spec, mode).items
    texts, correct = [r.text for r in items], [r.correct for r in items]
    result = {"eval/acc": float(np.mean(correct)), "eval/correct": float(sum(correct)), "eval/total": float(len(correct)),
              # How often the answer is in a closed box at all: a pretrained model often answers unboxed.
              "eval/boxed_rate": float(np.mean([final_boxed(t)[0] is not None for t in texts]))}
    if rollout.modes and not mode:
        # In auto mode the policy chooses: how often does it think?
        result["eval/auto_think_share"] = auto_think_share(texts)
    tasks = [s.task for s in samples]
    if len(set(tasks)) > 1:
        for task in sorted(set(tasks)):
            result[f"eval/acc/{task}"] = float(np.mean([r.correct for r, t in zip(items, tasks) if t == task]))
            # The mean score too: for graded rewards (IoU, numeric closeness) it says more than a threshold.
            result[f"eval/reward/{task}"] = float(np.mean([r.score for r, t in zip(items, tasks) if t == task]))
        # Unweighted over tasks, so a small task counts as much as a large one.
        result["eval/acc_task_mean"] = float(np.mean([result[f"eval/acc/{task}"] for task in set(tasks)]))
    return result


def per_task_lines(before: dict, after: dict) -> list[str]:
    """A held-out table, one row per task: accuracy and mean reward before -> after RL."""
    tasks = sorted(key.split("/", 2)[2] for key in after if key.startswith("eval/acc/"))
    if not tasks:
        return []
    width = max(len(task) for task in [*tasks, "mean of tasks"])
    lines = [f"{'task':<{width}}  accuracy before -> after   mean reward before -> after"]
    for task in tasks:
        acc, reward = f"eval/acc/{task}", f"eval/reward/{task}"
        lines.append(
            f"{task:<{width}}  {100 * before.get(acc, float('nan')):5.1f}% -> {100 * after[acc]:5.1f}%"
            f"        {before.get(reward, float('nan')):.3f} -> {after[reward]:.3f}"
        )
    mean = "eval/acc_task_mean"
    lines.append(f"{'mean of tasks':<{width}}  {100 * before.get(mean, float('nan')):5.1f}% -> {100 * after[mean]:5.1f}%")
    return lines
