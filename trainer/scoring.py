"""Scoring rollouts: the reward mix per task, whether each completion counts as correct, and the group
transforms that need all completions of a prompt at once."""

from __future__ import annotations

import time

from data.schema import Sample
from rewards.compose import RewardBatch, RewardComposer, accuracy_scores
from trainer.config import RewardConfig
from trainer.rollouts import Rollouts


class RewardFailureError(RuntimeError):
    """Too many reward calls failed in one step to train on its scores."""


class Scorer:
    def __init__(self, cfg: RewardConfig):
        self.cfg = cfg
        self.composer = RewardComposer(cfg.tasks, num_workers=cfg.num_workers, timeout_s=cfg.timeout_s,
                                       group_transforms=cfg.group_transforms or None)

    def rate(self, texts: list[str], owners: list[Sample]) -> RewardBatch:
        """Each text's reward mix for its sample's task, before group transforms (trainer/collect.py rates
        completions part by part while the engines generate the rest)."""
        return self.composer.score(texts, owners)

    def score(self, rollouts: Rollouts, group_transforms: bool = True, rated: RewardBatch | None = None) -> Rollouts:
        """Fill in each rollout's score, reward terms and correctness (the accuracy reward reaching
        `reward.correct_at` for its task, 1.0 by default); `group_transforms=False` for evaluation.
        `rated`: the items' `rate`, when already computed."""
        clock = time.time()
        owners = rollouts.owners()
        scored = rated if rated is not None else self.rate([r.text for r in rollouts.items], owners)
        if len(scored.scores) != len(rollouts.items):
            raise ValueError(f"{len(scored.scores)} rated completions for {len(rollouts.items)} rollouts")
        values = accuracy_scores(scored, self.cfg.accuracy_reward)
        correct = [v >= self.cfg.correct_at.get(s.task, 1.0) for v, s in zip(values, owners)]
        if group_transforms and self.cfg.group_transforms:
            scored = self.composer.apply_group_transforms(
                scored, [r.group for r in rollouts.items], owners, [len(r.completion.token_ids) for r in rollouts.items]
            )
        rollouts.attach_scores(scored, correct, [answer_of(d, self.cfg.accuracy_reward) for d in scored.details])
        rollouts.seconds["reward"] += time.time() - clock
        return rollouts

    def close(self) -> None:
        self.composer.close()


# Detail keys rewards use for the answer they read, most normalised first: an option letter, a number, the text.
ANSWER_KEYS = ("chosen", "pred", "extracted")


def answer_of(details: dict, accuracy_reward: str) -> str | None:
    """The answer the accuracy reward read from one completion (None when it read none)."""
    read = (details["terms"].get(accuracy_reward) or {}).get("details") or {}
    for key in ANSWER_KEYS:
        if read.get(key) is not None:
            return str(read[key])
    return None


def failure_lines(rollouts: Rollouts, max_fraction: float) -> list[str]:
    """One warning per failing reward term (how many completions, the first reason); RewardFailureError when
    more than `max_fraction` of the completions had a term fail (`reward.max_failure_frac`)."""
    total = max(len(rollouts.items), 1)
    lines = [f"{key} failed on {count} of {total} completions (scored 0): {rollouts.failure_reasons.get(key, '')}"
             for key, count in sorted(rollouts.failures.items())]
    worst = max(rollouts.failures.values(), default=0)
    if worst / total > max_fraction:
        raise RewardFailureError(f"reward failures above reward.max_failure_frac={max_fraction}: " + "; ".join(lines)
                                 + ". Training on these scores would learn from zeros; fix the endpoint or the reward,"
                                 " then resume (the last checkpoint is intact)")
    return lines
