"""Reward registry (``REWARDS``, a ``plugins.Registry``) and result type.

A reward is a function ``fn(completion: str, sample: Sample, **params) -> RewardOutput | float``.
Its keyword parameters with defaults are its configurable parameters. Register one with
``@register_reward("name")``; a reward can also be named by dotted path ``"package.module:function"``,
which imports the module on first use (this is how test-only or user rewards reach worker processes).

A reward that is cheaper scored many completions at once (an LLM judge sending concurrent requests)
may also give ``batch=fn(completions, samples, **params) -> list[RewardOutput | float]`` to
``register_reward``; ``call_reward_batch`` uses it (else it loops). In a batch, an item whose details
hold ``"error"`` counts as a failed call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from data.schema import Sample
from plugins.registry import Plugin, Registry


@dataclass
class RewardOutput:
    score: float
    details: dict = field(default_factory=dict)


RewardSpec = Plugin  # a registered reward; its many-at-once version, if any, is ``extras["batch"]``
REWARDS = Registry("reward", args=2, dotted_paths=True)


def register_reward(name: str, *, validate: Callable[[dict[str, Any]], None] | None = None,
                    batch: Callable[..., Any] | None = None):
    """Decorator registering ``fn`` under ``name``. ``validate(params)`` may raise ValueError for bad values.
    ``batch``: optional many-at-once version of ``fn`` taking the same params (see the module docstring)."""
    return REWARDS.register(name, validate=validate, batch=batch)


def get_reward(name: str) -> RewardSpec:
    """The spec of a registered reward, or of ``module:function`` (imported on demand)."""
    return REWARDS.get(name)


def list_rewards() -> list[RewardSpec]:
    """Registered rewards (dotted-path aliases excluded), sorted by name."""
    return [REWARDS.get(name) for name in REWARDS.names()]


def call_reward(spec: RewardSpec, completion: str, sample: Sample, params: dict[str, Any]) -> RewardOutput:
    """Call a reward and normalise its result; a malformed result raises TypeError/ValueError."""
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a string, got {type(completion).__name__}")
    return _normalise(spec, spec.fn(completion, sample, **params))


def _normalise(spec: RewardSpec, result: Any) -> RewardOutput:
    if isinstance(result, RewardOutput):
        score, details = result.score, result.details
    else:
        score, details = result, {}
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        # numpy scalars and similar are fine as long as they convert.
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise TypeError(f"reward {spec.name!r} returned a non-numeric score {type(score).__name__}") from None
    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"reward {spec.name!r} returned a non-finite score {score}")
    if not isinstance(details, dict):
        details = {"value": details}
    return RewardOutput(score, details)


def call_reward_batch(spec: RewardSpec, completions: list[str], samples: list[Sample],
                      params: dict[str, Any]) -> list[tuple[RewardOutput, str | None]]:
    """Score many completions in this process; item ``i`` is ``(RewardOutput, None | "error")``.

    Uses the reward's ``batch`` version when it has one, else calls the reward once per completion.
    Never raises for a reward's failure: a failed item (or a failed batch) scores 0 with the error in details.
    """
    if len(completions) != len(samples):
        raise ValueError(f"{len(completions)} completions but {len(samples)} samples")

    def failed(exc: BaseException) -> tuple[RewardOutput, str]:
        return RewardOutput(0.0, {"error": f"{type(exc).__name__}: {exc}"[:2000]}), "error"

    batch_fn = spec.extras.get("batch")
    if batch_fn is None:
        results = []
        for completion, sample in zip(completions, samples):
            try:
                results.append((call_reward(spec, completion, sample, params), None))
            except Exception as exc:  # noqa: BLE001 - a failing reward scores 0, as in the executor
                results.append(failed(exc))
        return results
    try:
        if not all(isinstance(c, str) for c in completions):
            raise TypeError("completions must be strings")
        raw = list(batch_fn(list(completions), list(samples), **params))
        if len(raw) != len(completions):
            raise ValueError(f"reward {spec.name!r} returned {len(raw)} results for {len(completions)} completions")
    except Exception as exc:  # noqa: BLE001
        return [failed(exc) for _ in completions]
    results = []
    for item in raw:
        try:
            output = _normalise(spec, item)
        except (TypeError, ValueError) as exc:
            results.append(failed(exc))
            continue
        results.append((output, "error" if "error" in output.details else None))
    return results
