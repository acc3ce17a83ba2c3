"""Per-task reward mixes: weighted sums of rewards, with gating between terms.

A config maps task name -> list of terms ``{name, weight=1.0, params={}, requires=[]}``. A term with
``requires`` counts only when every named reward of the same task scored >= 1.0 on that completion
(e.g. accuracy counts only when the format is right). Task ``default`` serves unlisted tasks.

``group_transforms`` (optional) maps task -> list of ``{name, params={}}`` group transforms (see
``rewards.group_transforms``), applied by ``apply_group_transforms`` once the groups are known.
"""

from __future__ import annotations

import importlib
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from data.schema import Sample
from rewards.base import call_reward_batch, get_reward
from rewards.executor import RewardExecutor
from rewards.group_transforms import GroupTransformSpec, apply_to_groups, get_group_transform

_TERM_KEYS = {"name", "weight", "params", "requires"}


@dataclass(frozen=True)
class Term:
    name: str
    weight: float
    params: dict
    requires: tuple[str, ...]


@dataclass
class RewardBatch:
    """``scores``: weighted, gated sums. ``components``: each reward's raw (ungated) score per completion,
    None where the completion's task has no such term. ``details``: per completion, each term's score,
    weight, whether it counted and the reward's details. ``failures``: ``"reward/timeout|error"`` counts.
    ``completions``: the scored texts (group transforms may read them).
    """

    scores: list[float]
    components: dict[str, list[float | None]]
    details: list[dict]
    failures: dict[str, int] = field(default_factory=dict)
    completions: list[str] | None = None
    failure_reasons: dict[str, str] = field(default_factory=dict)

    @classmethod
    def concat(cls, batches: list["RewardBatch"]) -> "RewardBatch":
        """One batch of the completions of `batches`, in order (failures summed, the first reason kept)."""
        names = sorted({name for batch in batches for name in batch.components})
        failures: Counter[str] = Counter()
        reasons: dict[str, str] = {}
        for batch in batches:
            failures.update(batch.failures)
            for key, why in batch.failure_reasons.items():
                reasons.setdefault(key, why)
        texts = [batch.completions for batch in batches]
        return cls(scores=[x for batch in batches for x in batch.scores],
                   components={name: [x for batch in batches
                                      for x in batch.components.get(name, [None] * len(batch.scores))]
                               for name in names},
                   details=[d for batch in batches for d in batch.details], failures=dict(failures),
                   completions=None if any(t is None for t in texts) else [x for t in texts for x in t],
                   failure_reasons=reasons)

    def permuted(self, order: list[int]) -> "RewardBatch":
        """The same completions, completion `order[i]` now at place i."""
        if sorted(order) != list(range(len(self.scores))):
            raise ValueError(f"order must be a permutation of {len(self.scores)} places")
        return RewardBatch(scores=[self.scores[i] for i in order],
                           components={name: [values[i] for i in order] for name, values in self.components.items()},
                           details=[self.details[i] for i in order], failures=dict(self.failures),
                           completions=None if self.completions is None else [self.completions[i] for i in order],
                           failure_reasons=dict(self.failure_reasons))


def accuracy_scores(batch: RewardBatch, accuracy_reward: str) -> list[float]:
    """Per completion, the score that decides whether it is correct: the accuracy reward's raw score
    where its task has that term, else the total score."""
    terms = batch.components.get(accuracy_reward) or [None] * len(batch.scores)
    return [total if term is None else term for term, total in zip(terms, batch.scores)]


def parse_terms(task: str, terms: Any) -> list[Term]:
    """A task's reward terms, checked (names, parameters, weights, gates); ValueError naming the term."""
    if not isinstance(terms, (list, tuple)) or not terms:
        raise ValueError(f"task {task!r}: expected a non-empty list of reward terms")
    parsed: list[Term] = []
    for index, raw in enumerate(terms):
        where = f"task {task!r} term {index}"
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a mapping with 'name', got {type(raw).__name__}")
        unknown = set(raw) - _TERM_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TERM_KEYS)}")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: 'name' must be a reward name")
        try:
            spec = get_reward(name)
        except KeyError as exc:
            raise ValueError(f"{where}: {exc.args[0]}") from None
        weight = raw.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f"{where} ({name}): 'weight' must be a finite number")
        params = raw.get("params") or {}
        try:
            spec.check_params(params)
        except ValueError as exc:
            raise ValueError(f"{where} ({name}): {exc}") from None
        requires = raw.get("requires") or []
        if isinstance(requires, str):
            requires = [requires]
        if not isinstance(requires, (list, tuple)) or not all(isinstance(r, str) for r in requires):
            raise ValueError(f"{where} ({name}): 'requires' must be a list of reward names")
        parsed.append(Term(name, float(weight), dict(params), tuple(requires)))
    names = [t.name for t in parsed]
    for index, term in enumerate(parsed):
        if names.count(term.name) > 1:
            raise ValueError(f"task {task!r} term {index}: reward {term.name!r} appears twice in the task")
        for required in term.requires:
            if required == term.name:
                raise ValueError(f"task {task!r} term {index} ({term.name}): a term cannot require itself")
            if required not in names:
                raise ValueError(
                    f"task {task!r} term {index} ({term.name}): requires {required!r}, which is not a term of "
                    f"this task (terms: {', '.join(names)})"
                )
    return parsed


_TRANSFORM_KEYS = {"name", "params"}


def parse_transforms(task: str, entries: Any) -> list[tuple[GroupTransformSpec, dict]]:
    """A task's group transforms with their parameters, checked; ValueError naming the entry."""
    if not isinstance(entries, (list, tuple)):
        raise ValueError(f"group_transforms for task {task!r}: expected a list of {{name, params}}")
    parsed = []
    for index, raw in enumerate(entries):
        where = f"group_transforms task {task!r} entry {index}"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ValueError(f"{where}: expected a mapping with 'name'")
        unknown = set(raw) - _TRANSFORM_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TRANSFORM_KEYS)}")
        try:
            spec = get_group_transform(raw["name"])
            params = dict(raw.get("params") or {})
            spec.check_params(params)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{where} ({raw['name']}): {exc.args[0]}") from None
        if any(existing.name == spec.name for existing, _ in parsed):
            raise ValueError(f"{where} ({spec.name}): appears twice in the task")
        parsed.append((spec, params))
    return parsed


class RewardComposer:
    """Score completions with each sample's task mix; see the module docstring for the config."""

    def __init__(self, tasks: dict[str, list[dict]], *, num_workers: int = 2, timeout_s: float = 5.0,
                 import_modules: Iterable[str] = (), group_transforms: dict[str, list[dict]] | None = None):
        if not isinstance(tasks, dict) or not tasks:
            raise ValueError("reward config must map at least one task name to a list of terms")
        self._executor: RewardExecutor | None = None
        # Import first so rewards named by user modules validate.
        self.import_modules = list(import_modules)
        for module in self.import_modules:
            importlib.import_module(module)
        self.tasks: dict[str, list[Term]] = {str(task): parse_terms(str(task), terms) for task, terms in tasks.items()}
        self.reward_names: list[str] = sorted({t.name for terms in self.tasks.values() for t in terms})
        if group_transforms is not None and not isinstance(group_transforms, dict):
            raise ValueError("group_transforms must map task names to lists of {name, params}")
        self.group_transforms: dict[str, list[tuple[GroupTransformSpec, dict]]] = {
            str(task): parse_transforms(str(task), entries) for task, entries in (group_transforms or {}).items()
        }
        self._executor = RewardExecutor(num_workers=num_workers, timeout_s=timeout_s, import_modules=self.import_modules)

    def terms_for(self, task: str) -> list[Term]:
        if task in self.tasks:
            return self.tasks[task]
        if "default" in self.tasks:
            return self.tasks["default"]
        raise KeyError(
            f"no reward configured for task {task!r} and no 'default' task; configured tasks: "
            f"{', '.join(sorted(self.tasks))}"
        )

    def score(self, completions: list[str], samples: list[Sample]) -> RewardBatch:
        if len(completions) != len(samples):
            raise ValueError(f"{len(completions)} completions but {len(samples)} samples")
        if self._executor is None:
            raise RuntimeError("RewardComposer is closed")
        term_lists = [self.terms_for(sample.task) for sample in samples]  # raises before any work
        jobs, owners = [], []
        for i, (completion, sample, terms) in enumerate(zip(completions, samples, term_lists)):
            for term in terms:
                jobs.append((term.name, term.params, completion, sample))
                owners.append((i, term))
        results = self._run_jobs(jobs)

        n = len(completions)
        raw: list[dict[str, float]] = [{} for _ in range(n)]
        outputs: list[dict[str, Any]] = [{} for _ in range(n)]
        failures: Counter[str] = Counter()
        reasons: dict[str, str] = {}
        for (i, term), (output, error) in zip(owners, results):
            raw[i][term.name] = output.score
            entry = {"score": output.score, "weight": term.weight, **({"error": error} if error else {})}
            entry["details"] = output.details
            outputs[i][term.name] = entry
            if error:
                failures[f"{term.name}/{error}"] += 1
                why = output.details.get("error") or output.details.get("reason") or error
                reasons.setdefault(f"{term.name}/{error}", str(why))

        components: dict[str, list[float | None]] = {name: [None] * n for name in self.reward_names}
        scores, details = [], []
        for i, terms in enumerate(term_lists):
            total = 0.0
            for term in terms:
                value = raw[i][term.name]
                components[term.name][i] = value
                counted = all(raw[i][r] >= 1.0 for r in term.requires)
                outputs[i][term.name]["counted"] = counted
                if counted:
                    total += term.weight * value
            scores.append(total)
            details.append({"task": samples[i].task, "terms": outputs[i]})
        return RewardBatch(scores=scores, components=components, details=details, failures=dict(failures),
                           completions=list(completions), failure_reasons=reasons)

    def transforms_for(self, task: str) -> list[tuple[GroupTransformSpec, dict]]:
        """The task's group transforms, else those of ``default``, else none."""
        if task in self.group_transforms:
            return self.group_transforms[task]
        return self.group_transforms.get("default", [])

    def apply_group_transforms(self, batch: RewardBatch, group_index: list[int], samples: list[Sample],
                               lengths: list[int] | None = None) -> RewardBatch:
        """A new batch whose scores went through each group's task transforms.

        ``group_index[i]`` names the group (prompt) of completion ``i``; a group must share one task.
        ``lengths``: token counts per completion; None uses the completions' character counts.
        ``components["_base"]`` keeps the scores before any transform (the first call's input when
        applied twice), ``components["_group/<name>"]`` each transform's output (None where not applied),
        and ``details[i]["group_transforms"]`` the per-transform change of that completion's score.
        """
        n = len(batch.scores)
        if len(group_index) != n or len(samples) != n:
            raise ValueError(f"{n} scores but {len(group_index)} group indices and {len(samples)} samples")
        completions = batch.completions if batch.completions is not None else [""] * n
        if lengths is None:
            if batch.completions is None:
                raise ValueError("lengths are required when the batch does not carry its completions")
            lengths = [len(text) for text in completions]
        lengths = [int(x) for x in lengths]
        if len(lengths) != n:
            raise ValueError(f"{n} scores but {len(lengths)} lengths")
        groups: dict[Any, list[int]] = {}
        for i, g in enumerate(group_index):
            groups.setdefault(int(g), []).append(i)
        scores = list(batch.scores)
        components = {name: list(values) for name, values in batch.components.items()}
        components.setdefault("_base", list(batch.scores))
        details = [dict(d) for d in batch.details] if len(batch.details) == n else [{} for _ in range(n)]
        for members in groups.values():
            tasks = {samples[i].task for i in members}
            if len(tasks) > 1:
                raise ValueError(f"group {group_index[members[0]]} mixes tasks {sorted(tasks)}")
            transforms = self.transforms_for(tasks.pop())
            if not transforms:
                continue
            steps = apply_to_groups(transforms, scores, completions, samples, lengths, members)
            before = [scores[i] for i in members]
            for name, values in steps:
                column = components.setdefault(f"_group/{name}", [None] * n)
                for k, i in enumerate(members):
                    column[i] = values[k]
                    changes = {**details[i].get("group_transforms", {}), name: values[k] - before[k]}
                    details[i]["group_transforms"] = changes
                before = values
            for k, i in enumerate(members):
                scores[i] = before[k]
        return RewardBatch(scores=scores, components=components, details=details, failures=dict(batch.failures),
                           completions=batch.completions, failure_reasons=dict(batch.failure_reasons))

    def _run_jobs(self, jobs: list) -> list:
        """Executor results per job, except rewards registered with a ``batch`` version (LLM judges): those
        are scored here, one batched call per (reward, params), bounded by their own client timeouts."""
        results: list = [None] * len(jobs)
        plain: list[int] = []
        batched: dict[tuple[str, str], list[int]] = {}
        for index, (name, params, _, _) in enumerate(jobs):
            if get_reward(name).extras.get("batch") is None:
                plain.append(index)
            else:
                batched.setdefault((name, repr(sorted(params.items()))), []).append(index)
        for indices in batched.values():
            name, params = jobs[indices[0]][0], jobs[indices[0]][1]
            outputs = call_reward_batch(get_reward(name), [jobs[i][2] for i in indices], [jobs[i][3] for i in indices],
                                        params)
            for i, result in zip(indices, outputs):
                results[i] = result
        for i, result in zip(plain, self._executor.score([jobs[i] for i in plain])):
            results[i] = result
        return results

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def __enter__(self) -> "RewardComposer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
