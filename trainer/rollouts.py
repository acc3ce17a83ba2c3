"""One step's scored rollouts, grouped by prompt: what the controller turns into a training batch."""

from __future__ import annotations

from dataclasses import dataclass, field

from data.schema import Sample
from rewards.compose import RewardBatch
from trainer.engines.sampling import Completion


@dataclass
class Rollouts:
    samples: list[Sample]
    "One per group (prompt)."
    completions: list[Completion] = field(default_factory=list)
    prompt_ids: list[list[int]] = field(default_factory=list)
    "Per completion: the prompt tokens, including any forced mode prefix."
    texts: list[str] = field(default_factory=list)
    "Per completion: the text rewards saw (mode prefix + response)."
    group: list[int] = field(default_factory=list)
    "Per completion: index into `samples`."
    modes: list[str] = field(default_factory=list)
    "Per completion: the BPO mode ('' without modes)."
    scored: RewardBatch | None = None
    correct: list[bool] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {"generate": 0.0, "reward": 0.0})
    "Wall time spent generating and scoring these rollouts (summed over dynamic-sampling rounds)."

    def table_rows(self, limit: int) -> list[dict]:
        """Up to `limit` completions for inspection, one prompt after another (first completion of
        every prompt, then second ones, ...), each with its prompt, answer key and score."""
        order = sorted(range(len(self.completions)), key=lambda i: (self.group[:i].count(self.group[i]), i))
        rows = []
        for i in order[:limit]:
            sample = self.samples[self.group[i]]
            prompt = sample.prompt if sample.prompt is not None else (sample.messages or [{}])[-1].get("content", "")
            rows.append({
                "task": sample.task, "prompt": str(prompt), "completion": self.texts[i],
                "ground_truth": str(sample.ground_truth), "reward": float(self.scored.scores[i]),
                "correct": bool(self.correct[i]), "mode": self.modes[i] if self.modes else "",
            })
        return rows

    def varied_groups(self) -> list[int]:
        """Groups whose scores are not all equal (the only ones with a GRPO gradient), in order."""
        scores: dict[int, set[float]] = {}
        for g, score in zip(self.group, self.scored.scores):
            scores.setdefault(g, set()).add(score)
        return [g for g in range(len(self.samples)) if len(scores.get(g, ())) > 1]

    def select_groups(self, groups: list[int]) -> "Rollouts":
        """The listed groups only, renumbered 0..len(groups)-1 in the given order."""
        renumber = {g: i for i, g in enumerate(groups)}
        rows = [i for g in groups for i, gi in enumerate(self.group) if gi == g]
        scored = self.scored
        return Rollouts(
            samples=[self.samples[g] for g in groups],
            completions=[self.completions[i] for i in rows],
            prompt_ids=[self.prompt_ids[i] for i in rows],
            texts=[self.texts[i] for i in rows],
            group=[renumber[self.group[i]] for i in rows],
            modes=[self.modes[i] for i in rows],
            scored=RewardBatch(
                scores=[scored.scores[i] for i in rows],
                components={k: [v[i] for i in rows] for k, v in scored.components.items()},
                details=[scored.details[i] for i in rows],
                failures=dict(scored.failures),
            ),
            correct=[self.correct[i] for i in rows],
            seconds=dict(self.seconds),
        )

    @staticmethod
    def concat(parts: list["Rollouts"]) -> "Rollouts":
        out = Rollouts(samples=[])
        names = {k for p in parts for k in p.scored.components}
        scores, components, details, failures = [], {k: [] for k in names}, [], {}
        for part in parts:
            offset = len(out.samples)
            out.samples += part.samples
            out.completions += part.completions
            out.prompt_ids += part.prompt_ids
            out.texts += part.texts
            out.group += [g + offset for g in part.group]
            out.modes += part.modes
            out.correct += part.correct
            for k, v in part.seconds.items():
                out.seconds[k] += v
            scores += part.scored.scores
            details += part.scored.details
            for k in names:
                components[k] += part.scored.components.get(k, [None] * len(part.scored.scores))
            for k, v in part.scored.failures.items():
                failures[k] = failures.get(k, 0) + v
        out.scored = RewardBatch(scores=scores, components=components, details=details, failures=failures)
        return out
