"""One step's rollouts: a record per completion, grouped by prompt, from generation to score. The
controller turns them into a training batch; a new per-completion field is added to `Rollout` only."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from data.schema import Sample
from rewards.compose import RewardBatch
from trainer.batch import TrainBatch
from trainer.rollout.sampling import Completion


@dataclass
class Rollout:
    group: int
    "Index of the prompt in `Rollouts.samples`."
    prompt_ids: list[int]
    "The prompt tokens the completion followed, including any forced thinking-mode prefix."
    completion: Completion
    text: str
    "What rewards read: the part the prompt opened (template, mode prefix) and the response."
    mode: str = ""
    "The BPO thinking mode ('' without modes)."
    score: float = 0.0
    correct: bool = False
    terms: dict[str, float | None] = field(default_factory=dict)
    "Each reward's raw score (None where the prompt's task has no such term)."
    answer: str | None = None
    "The answer the accuracy reward read, normalised where it says how (majority votes compare these)."


@dataclass
class Rollouts:
    samples: list[Sample]
    "One per group (prompt)."
    items: list[Rollout] = field(default_factory=list)
    "Completions of a prompt are contiguous, in prompt order."
    failures: dict[str, int] = field(default_factory=dict)
    "Reward calls that timed out or raised, by `reward/timeout|error`."
    failure_reasons: dict[str, str] = field(default_factory=dict)
    "The first error of each `failures` key (a judge's names its endpoint)."
    seconds: dict[str, float] = field(default_factory=lambda: {"generate": 0.0, "reward": 0.0})
    "Wall time spent generating and scoring these rollouts (summed over dynamic-sampling rounds)."
    media: list | None = None
    "Per prompt, the processed images generation saw (None when no prompt has any); training reuses them."

    def owners(self) -> list[Sample]:
        """Per completion, the sample it answers."""
        return [self.samples[r.group] for r in self.items]

    def attach_scores(self, scored: RewardBatch, correct: list[bool], answers: list[str | None]) -> None:
        for i, (item, ok, answer) in enumerate(zip(self.items, correct, answers)):
            item.score, item.correct, item.answer = float(scored.scores[i]), bool(ok), answer
            item.terms = {name: values[i] for name, values in scored.components.items()}
        # Added to what collection counted already (a patient simulator that gave no reply).
        for key, count in scored.failures.items():
            self.failures[key] = self.failures.get(key, 0) + count
            self.failure_reasons.setdefault(key, scored.failure_reasons.get(key, ""))

    def table_rows(self, limit: int) -> list[dict]:
        """Up to `limit` completions for inspection, one prompt after another (first completion of
        every prompt, then second ones, ...), each with its prompt, answer key and score."""
        groups = [r.group for r in self.items]
        order = sorted(range(len(self.items)), key=lambda i: (groups[:i].count(groups[i]), i))
        rows = []
        for i in order[:limit]:
            item = self.items[i]
            sample = self.samples[item.group]
            prompt = sample.prompt if sample.prompt is not None else (sample.messages or [{}])[-1].get("content", "")
            rows.append({
                "task": sample.task, "prompt": str(prompt), "completion": item.text,
                "ground_truth": str(sample.ground_truth), "reward": item.score,
                "correct": item.correct, "mode": item.mode,
            })
        return rows

    def response_mask(self) -> torch.Tensor:
        """[B, T] float: 1 on each completion's trained tokens (its loss mask), right-padded to the longest."""
        completions = [r.completion for r in self.items]
        width = max([1] + [len(c.token_ids) for c in completions])
        return TrainBatch.per_token([c.loss_mask or [1] * len(c.token_ids) for c in completions], width)

    def varied_groups(self) -> list[int]:
        """Groups whose scores are not all equal (the only ones with a GRPO gradient), in order."""
        scores: dict[int, set[float]] = {}
        for item in self.items:
            scores.setdefault(item.group, set()).add(item.score)
        return [g for g in range(len(self.samples)) if len(scores.get(g, ())) > 1]

    def select_groups(self, groups: list[int]) -> "Rollouts":
        """The listed groups only, renumbered 0..len(groups)-1 in the given order."""
        renumber = {g: i for i, g in enumerate(groups)}
        items = [replace(r, group=renumber[g]) for g in groups for r in self.items if r.group == g]
        media = None if self.media is None else [self.media[g] for g in groups]
        return Rollouts([self.samples[g] for g in groups], items, failures=dict(self.failures),
                        failure_reasons=dict(self.failure_reasons), seconds=dict(self.seconds), media=media)

    @staticmethod
    def concat(parts: list["Rollouts"]) -> "Rollouts":
        out = Rollouts(samples=[])
        if any(part.media is not None for part in parts):
            out.media = [m for part in parts for m in (part.media or [None] * len(part.samples))]
        for part in parts:
            offset = len(out.samples)
            out.samples += part.samples
            out.items += [replace(r, group=r.group + offset) for r in part.items]
            for key, count in part.failures.items():
                out.failures[key] = out.failures.get(key, 0) + count
                out.failure_reasons.setdefault(key, part.failure_reasons.get(key, ""))
            for key, seconds in part.seconds.items():
                out.seconds[key] += seconds
        return out


def term_means(items: list[Rollout]) -> dict[str, float]:
    """`reward_terms/<name>`: each reward term's mean over the completions whose task has it."""
    out = {}
    for name in dict.fromkeys(name for r in items for name in r.terms):
        present = [r.terms[name] for r in items if r.terms.get(name) is not None]
        if present:
            out[f"reward_terms/{name}"] = float(np.mean(present))
    return out
