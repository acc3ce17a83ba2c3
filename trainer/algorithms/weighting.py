"""Advantage and task weighting from how hard each task and each prompt currently is.

A weighting rule maps an accuracy in [0, 1] to a non-negative weight: ``fn(group_accuracy, **params)``;
register one with ``@register_weighting_rule("name")``. ``TaskWeighter`` applies a rule two ways:
per sample (from the accuracy of the sample's own group, for scaling advantages) and per task (from a
running EMA of the task's accuracy, for mixing tasks), and keeps its statistics for checkpoints.

``difficulty`` follows M2-Reasoning's difficulty-aware weighting. Published (idea): groups that are
neither solved nor hopeless get more weight. Inferred (formula, ours): ``4 p (1 - p)``, which is 1 at
p = 0.5 and 0 at p = 0 or 1; it equals 4x the variance of a 0/1 reward with success rate p.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from plugins.registry import Registry

# fn(group_accuracy, **params) -> weight; params from reward.weighting.params.
WEIGHTING_RULES = Registry("weighting rule", args=1)
register_weighting_rule = WEIGHTING_RULES.register


@register_weighting_rule("uniform")
def uniform(group_accuracy: float) -> float:
    """1.0 whatever the accuracy."""
    return 1.0


@register_weighting_rule("difficulty")
def difficulty(group_accuracy: float, *, floor: float = 0.0) -> float:
    """``floor + (1 - floor) * 4 p (1 - p)``: peaked at p = 0.5; ``floor`` keeps easy/hard groups above 0."""
    p = min(1.0, max(0.0, float(group_accuracy)))
    return floor + (1.0 - floor) * 4.0 * p * (1.0 - p)


@register_weighting_rule("difficulty_gaussian")
def difficulty_gaussian(group_accuracy: float, *, sigma: float = 0.25) -> float:
    """``exp(-(p - 0.5)^2 / (2 sigma^2))``: 1 at p = 0.5, never exactly 0."""
    p = min(1.0, max(0.0, float(group_accuracy)))
    return math.exp(-((p - 0.5) ** 2) / (2.0 * sigma * sigma))


def group_accuracies(group_index: list[int], correct: list[bool]) -> dict[int, float]:
    """Fraction correct per group id."""
    if len(group_index) != len(correct):
        raise ValueError(f"{len(group_index)} group indices but {len(correct)} correctness flags")
    totals: dict[int, list[int]] = {}
    for g, ok in zip(group_index, correct):
        entry = totals.setdefault(int(g), [0, 0])
        entry[0] += bool(ok)
        entry[1] += 1
    return {g: right / count for g, (right, count) in totals.items()}


class TaskWeighter:
    """Per-task running accuracy and the weights a rule derives from it.

    ``observe`` once per step with every completion's task, correctness and group; each task's EMA
    becomes ``ema * old + (1 - ema) * (this step's accuracy on the task)``, starting at the first
    step's accuracy. ``task_weights`` applies the rule to each seen task's EMA accuracy and scales the
    results to mean 1 (all 1.0 when every rule value is 0, e.g. every task solved under ``difficulty``).
    ``sample_weights`` applies the rule to the accuracy of each completion's own group in the given
    batch (no state involved).
    """

    def __init__(self, rule: str = "difficulty", rule_params: dict | None = None, ema: float = 0.9):
        self.rule_name = rule
        self.rule = WEIGHTING_RULES.check(rule, rule_params)
        self.rule_params = dict(rule_params or {})
        if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0.0 <= ema < 1.0:
            raise ValueError("ema must be in [0, 1)")
        self.ema = float(ema)
        try:
            probe = self.rule(0.5, **self.rule_params)
        except TypeError as exc:  # e.g. a second required argument
            raise ValueError(f"weighting rule {rule!r}: {exc}") from None
        if not isinstance(probe, (int, float)) or not math.isfinite(probe) or probe < 0:
            raise ValueError(f"weighting rule {rule!r} must return a finite, non-negative number")
        self.stats: dict[str, dict[str, float]] = {}

    def _weight(self, accuracy: float) -> float:
        value = float(self.rule(accuracy, **self.rule_params))
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"weighting rule {self.rule_name!r} returned {value} for accuracy {accuracy}")
        return value

    def observe(self, tasks: list[str], correct: list[bool], group_index: list[int]) -> None:
        if not len(tasks) == len(correct) == len(group_index):
            raise ValueError(f"{len(tasks)} tasks, {len(correct)} correctness flags, {len(group_index)} group indices")
        per_task: dict[str, list[int]] = {}
        groups: dict[str, set[int]] = {}
        for task, ok, g in zip(tasks, correct, group_index):
            entry = per_task.setdefault(str(task), [0, 0])
            entry[0] += bool(ok)
            entry[1] += 1
            groups.setdefault(str(task), set()).add(int(g))
        for task, (right, count) in per_task.items():
            accuracy = right / count
            stat = self.stats.get(task)
            if stat is None:
                self.stats[task] = {"ema_accuracy": accuracy, "samples": count, "groups": len(groups[task]), "steps": 1}
            else:
                stat["ema_accuracy"] = self.ema * stat["ema_accuracy"] + (1.0 - self.ema) * accuracy
                stat["samples"] += count
                stat["groups"] += len(groups[task])
                stat["steps"] += 1

    def sample_weights(self, group_index: list[int], correct: list[bool]) -> list[float]:
        accuracy = group_accuracies(group_index, correct)
        weight = {g: self._weight(p) for g, p in accuracy.items()}
        return [weight[int(g)] for g in group_index]

    def task_weights(self) -> dict[str, float]:
        raw = {task: self._weight(stat["ema_accuracy"]) for task, stat in sorted(self.stats.items())}
        total = sum(raw.values())
        if total <= 0:
            return {task: 1.0 for task in raw}
        return {task: value * len(raw) / total for task, value in raw.items()}

    def weigh(self, advantages, tasks: list[str], group_index: list[int], correct: list[bool],
              scope: str = "sample") -> tuple[Any, dict[str, float]]:
        """Observe a step's completions, then scale each advantage by its group's weight (`scope=sample`)
        or its task's running weight (`scope=task`); returns the scaled advantages and metrics."""
        self.observe(tasks, correct, group_index)
        if scope == "sample":
            weights = self.sample_weights(group_index, correct)
        else:
            by_task = self.task_weights()
            weights = [by_task.get(t, 1.0) for t in tasks]
        metrics = {"weighting/mean": float(np.mean(weights))}
        metrics.update({f"weighting/task/{t}": w for t, w in self.task_weights().items()})
        scale = advantages.new_tensor(weights)
        return advantages * (scale if advantages.dim() == 1 else scale.unsqueeze(-1)), metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule_name,
            "rule_params": dict(self.rule_params),
            "ema": self.ema,
            "stats": {task: dict(stat) for task, stat in self.stats.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the statistics; the rule and EMA factor stay those given to the constructor, so a
        resumed run may change them."""
        stats = state.get("stats")
        if not isinstance(stats, dict):
            raise ValueError("state has no 'stats' mapping")
        self.stats = {str(task): {k: float(v) if k == "ema_accuracy" else int(v) for k, v in stat.items()}
                      for task, stat in stats.items()}
