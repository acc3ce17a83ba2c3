"""Endless, resumable batches of prompts: `PromptSampler` (uniform) and `TaskHomogeneousSampler` (one task a batch).

PromptSampler: the order inside epoch `e` is a permutation drawn from `numpy.random.default_rng([seed, e])`
alone, so it never depends on what the process did before; resuming only needs
`(seed, epoch, position)`.

TaskHomogeneousSampler: task-homogeneous batches with optional easy-to-hard ordering (M2-Reasoning style).
Every batch holds samples of one task, so each optimiser step sees one reward type and one
difficulty scale. Randomness is derived from fixed keys only, never from a running RNG:
- the task of step s comes from `default_rng([seed, 0, s])` and the current weights;
- a task's order in epoch e is a permutation from `default_rng([seed, 1, task_key, e])`,
  where task_key is a stable hash of the task name (Python's hash() is salted per process).
So `(seed, step, weights, per-task epoch/position)` is the whole state.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from data.schema import Sample
from plugins.registry import Registry

# fn(samples, batch_size, **params) -> a sampler with next_batch / state_dict / load_state_dict. The
# trainer passes each keyword parameter the function declares from the `data` config key of that name.
SAMPLERS = Registry("prompt sampler", args=2)


class PromptSampler:
    """Batches of samples, forever, epoch after epoch.

    drop_last=True: when fewer than `batch_size` samples are left in an epoch they are skipped
    and the next batch starts the next epoch, so every batch is full and no sample repeats
    inside a batch. drop_last=False: that tail comes out as one short batch instead.

    `epoch` and `state_dict()["position"]` always point at where the *next* batch starts
    (a finished epoch rolls over right away), so a saved state is never at an epoch's end.
    """

    def __init__(
        self, samples: Sequence[Sample], batch_size: int, *, seed: int, shuffle: bool = True, drop_last: bool = True
    ) -> None:
        if not samples:
            raise ValueError("PromptSampler needs at least one sample")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if drop_last and batch_size > len(samples):
            raise ValueError(
                f"batch_size {batch_size} is larger than the {len(samples)} samples, so with drop_last "
                "no full batch exists; lower batch_size or set drop_last=False"
            )
        self.samples = list(samples)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = _check_seed(seed)
        self._epoch = 0
        self._position = 0
        self._order: np.ndarray | None = None
        self._order_epoch = -1

    @property
    def epoch(self) -> int:
        """The epoch the next batch is drawn from (0-based)."""
        return self._epoch

    @property
    def batches_per_epoch(self) -> int:
        full, tail = divmod(len(self.samples), self.batch_size)
        return full + (1 if tail and not self.drop_last else 0)

    def next_batch(self) -> list[Sample]:
        order = self._order_for(self._epoch)
        indices = order[self._position : self._position + self.batch_size]
        self._position += len(indices)
        self._roll_over()
        return [self.samples[i] for i in indices]

    def __iter__(self) -> Iterator[list[Sample]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "position": self._position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved state. Its seed wins over the constructor's: the data order of the
        run being resumed is the one to continue."""
        missing = {"epoch", "position", "seed"} - set(state)
        if missing:
            raise ValueError(f"sampler state lacks {sorted(missing)}; got {sorted(state)}")
        epoch, position = state["epoch"], state["position"]
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"sampler state: epoch must be a non-negative integer, got {epoch!r}")
        if not isinstance(position, int) or not 0 <= position <= len(self.samples):
            raise ValueError(
                f"sampler state: position {position!r} is outside 0..{len(self.samples)} "
                "(was the dataset changed since the state was saved?)"
            )
        self.seed = _check_seed(state["seed"])
        self._epoch, self._position = epoch, position
        self._order_epoch = -1
        self._roll_over()

    def _roll_over(self) -> None:
        left = len(self.samples) - self._position
        if left == 0 or (self.drop_last and left < self.batch_size):
            self._epoch += 1
            self._position = 0

    def _order_for(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            n = len(self.samples)
            self._order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._order_epoch = epoch
        assert self._order is not None
        return self._order


def _check_seed(seed: Any) -> int:
    # default_rng rejects negative entropy; say so up front rather than on the first batch.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


_DRAW, _SHUFFLE = 0, 1  # domain tags so the two RNG streams never share a seed


def _task_key(task: str) -> int:
    return int.from_bytes(hashlib.sha256(task.encode("utf-8")).digest()[:8], "little")


class TaskHomogeneousSampler:
    """Endless batches, each of `batch_size` samples from a single task.

    The task of each step is drawn with probability proportional to its weight (uniform by
    default). Each task keeps its own epoch and position; a tail shorter than batch_size is
    skipped and the task starts its next epoch (so batches are full and never repeat a sample).
    Inside a task: with curriculum_key, samples are sorted by metadata[curriculum_key]
    ascending (easy first; ties keep their original order) and every epoch replays that
    order; without it, each epoch is a fresh shuffle.
    """

    def __init__(
        self,
        samples_by_task: Mapping[str, Sequence[Sample]],
        batch_size: int,
        *,
        seed: int,
        task_weights: Mapping[str, float] | None = None,
        curriculum_key: str | None = None,
    ) -> None:
        if not samples_by_task:
            raise ValueError("TaskHomogeneousSampler needs at least one task")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        # Sorted names: the draw must not depend on the dict's insertion order.
        self.tasks = sorted(samples_by_task)
        for task in self.tasks:
            n = len(samples_by_task[task])
            if n < batch_size:
                raise ValueError(
                    f"task '{task}' has {n} samples, fewer than batch_size {batch_size}, "
                    "so it can never fill a batch; lower batch_size or drop the task"
                )
        self.samples = {t: list(samples_by_task[t]) for t in self.tasks}
        self.batch_size = batch_size
        self.curriculum_key = curriculum_key
        self.seed = _check_seed(seed)
        self._sorted = {t: self._curriculum_order(t) for t in self.tasks} if curriculum_key else {}
        self._weights = self._checked_weights(task_weights)
        self._step = 0
        self._epoch = {t: 0 for t in self.tasks}
        self._position = {t: 0 for t in self.tasks}
        self._orders: dict[str, tuple[int, np.ndarray]] = {}
        self.last_task: str | None = None

    @property
    def step(self) -> int:
        """Number of batches produced so far (the index of the next one)."""
        return self._step

    @property
    def task_weights(self) -> dict[str, float]:
        return dict(self._weights)

    def epoch(self, task: str) -> int:
        return self._epoch[task]

    def set_task_weights(self, task_weights: Mapping[str, float]) -> None:
        """Replace the weights (dynamic weighting); they apply from the next batch on."""
        self._weights = self._checked_weights(task_weights)

    def next_batch(self) -> list[Sample]:
        task = self._draw_task(self._step)
        order = self._order_for(task)
        pos = self._position[task]
        batch = [self.samples[task][i] for i in order[pos : pos + self.batch_size]]
        self._position[task] = pos + self.batch_size
        if len(self.samples[task]) - self._position[task] < self.batch_size:
            self._epoch[task] += 1
            self._position[task] = 0
        self._step += 1
        self.last_task = task
        return batch

    def __iter__(self) -> Iterator[list[Sample]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "step": self._step,
            "task_weights": dict(self._weights),
            "tasks": {t: {"epoch": self._epoch[t], "position": self._position[t]} for t in self.tasks},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved state. Its seed and weights win over the constructor's: the
        data order of the run being resumed is the one to continue."""
        missing = {"seed", "step", "task_weights", "tasks"} - set(state)
        if missing:
            raise ValueError(f"curriculum sampler state lacks {sorted(missing)}; got {sorted(state)}")
        saved = set(state["tasks"])
        if saved != set(self.tasks):
            raise ValueError(
                f"curriculum sampler state has tasks {sorted(saved)} but this sampler has {self.tasks}"
            )
        step = state["step"]
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"curriculum sampler state: step must be a non-negative integer, got {step!r}")
        epochs, positions = {}, {}
        for t in self.tasks:
            epoch, pos = state["tasks"][t].get("epoch"), state["tasks"][t].get("position")
            if not isinstance(epoch, int) or epoch < 0:
                raise ValueError(
                    f"curriculum sampler state: task '{t}' epoch must be a non-negative integer, got {epoch!r}"
                )
            if not isinstance(pos, int) or not 0 <= pos <= len(self.samples[t]) - self.batch_size:
                raise ValueError(
                    f"curriculum sampler state: task '{t}' position {pos!r} is outside "
                    f"0..{len(self.samples[t]) - self.batch_size} (was the dataset or batch_size changed?)"
                )
            epochs[t], positions[t] = epoch, pos
        weights = self._checked_weights(state["task_weights"])
        self.seed = _check_seed(state["seed"])
        self._weights, self._step, self._epoch, self._position = weights, step, epochs, positions
        self._orders = {}
        self.last_task = None

    # ------------------------------------------------------------------ internals

    def _checked_weights(self, task_weights: Mapping[str, float] | None) -> dict[str, float]:
        if task_weights is None:
            return {t: 1.0 for t in self.tasks}
        unknown = set(task_weights) - set(self.tasks)
        missing = set(self.tasks) - set(task_weights)
        if unknown or missing:
            # All tasks must be named: a silently defaulted weight hides typos in task names.
            raise ValueError(
                f"task_weights must name every task exactly: unknown {sorted(unknown)}, missing {sorted(missing)}"
            )
        weights = {}
        for t in self.tasks:
            w = task_weights[t]
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ValueError(f"task_weights['{t}'] must be a finite number >= 0, got {w!r}")
            weights[t] = float(w)
        if not any(weights.values()):
            raise ValueError("task_weights: at least one task needs a positive weight")
        return weights

    def _draw_task(self, step: int) -> str:
        cum = np.cumsum([self._weights[t] for t in self.tasks])
        u = np.random.default_rng([self.seed, _DRAW, step]).random() * cum[-1]
        # First task whose cumulative weight exceeds u; zero-weight tasks are never picked.
        idx = int(np.searchsorted(cum, u, side="right"))
        return self.tasks[min(idx, len(self.tasks) - 1)]

    def _curriculum_order(self, task: str) -> np.ndarray:
        keys = []
        for i, s in enumerate(self.samples[task]):
            if self.curriculum_key not in s.metadata:
                name = s.id if s.id is not None else f"#{i}"
                raise ValueError(f"task '{task}': sample {name} has no metadata['{self.curriculum_key}']")
            keys.append(s.metadata[self.curriculum_key])
        # sorted() is stable, so equal keys keep their original order.
        return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)

    def _order_for(self, task: str) -> np.ndarray:
        if self.curriculum_key:
            return self._sorted[task]
        epoch = self._epoch[task]
        cached = self._orders.get(task)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, _SHUFFLE, _task_key(task), epoch])
            cached = (epoch, rng.permutation(len(self.samples[task])))
            self._orders[task] = cached
        return cached[1]


@SAMPLERS.register("uniform")
def uniform(samples: Sequence[Sample], batch_size: int, *, seed: int = 0, shuffle: bool = True) -> PromptSampler:
    """Every prompt once per epoch, reshuffled each epoch (`data.shuffle`)."""
    return PromptSampler(samples, batch_size, seed=seed, shuffle=shuffle)


@SAMPLERS.register("task_homogeneous")
def task_homogeneous(samples: Sequence[Sample], batch_size: int, *, seed: int = 0,
                     task_weights: Mapping[str, float] | None = None,
                     curriculum_key: str | None = None) -> TaskHomogeneousSampler:
    """One task per batch (M2-Reasoning), drawn by `data.task_weights`, easy first by `data.curriculum_key`."""
    by_task: dict[str, list[Sample]] = {}
    for sample in samples:
        by_task.setdefault(sample.task, []).append(sample)
    return TaskHomogeneousSampler(by_task, batch_size, seed=seed, task_weights=dict(task_weights) if task_weights else None,
                                  curriculum_key=curriculum_key)
