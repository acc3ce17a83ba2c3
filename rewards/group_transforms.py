"""Group transforms: score rewrites that need all n completions of one prompt at once.

A transform is ``fn(scores, completions, samples, lengths, **params) -> list[float]`` and is applied
to one group (the completions of a single prompt) at a time; it returns the group's new scores.
Register one with ``@register_group_transform("name")``. ``RewardComposer(group_transforms=...)``
runs them per task after the reward mix (see ``RewardComposer.apply_group_transforms``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from data.schema import Sample
from plugins.registry import Plugin, Registry

GroupTransformSpec = Plugin
GROUP_TRANSFORMS = Registry("group transform", args=4)


def register_group_transform(name: str, *, validate: Callable[[dict[str, Any]], None] | None = None):
    """Decorator registering a group transform; ``validate(params)`` gets defaults merged with the config."""
    return GROUP_TRANSFORMS.register(name, validate=validate)


def get_group_transform(name: str) -> GroupTransformSpec:
    return GROUP_TRANSFORMS.get(name)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between sorted values (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _number(params: dict, key: str, *, low: float | None = None, high: float | None = None,
            allow_none: bool = False, strict_low: bool = False) -> None:
    value = params.get(key)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number")
    if low is not None and (value < low or (strict_low and value == low)):
        raise ValueError(f"{key} must be {'>' if strict_low else '>='} {low}")
    if high is not None and value > high:
        raise ValueError(f"{key} must be <= {high}")


def _validate_length_bonus(params: dict[str, Any]) -> None:
    _number(params, "coef")
    _number(params, "top_frac", low=0.0, high=1.0, strict_low=True)
    _number(params, "min_group_score", allow_none=True)
    _number(params, "min_score", allow_none=True)
    if params.get("group_stat") not in ("mean", "max"):
        raise ValueError("group_stat must be 'mean' or 'max'")


@register_group_transform("length_bonus", validate=_validate_length_bonus)
def length_bonus(
    scores: list[float],
    completions: list[str],
    samples: list[Sample],
    lengths: list[int],
    *,
    coef: float = 1.0,
    top_frac: float = 0.8,
    min_group_score: float | None = 0.5,
    group_stat: str = "mean",
    min_score: float | None = None,
) -> list[float]:
    """Baichuan-M2-style brevity bonus: ``score + coef * 4 / sqrt(length)`` for the group's better completions.

    The group qualifies when its ``group_stat`` (mean or max) score is >= ``min_group_score``
    (None: always). A completion qualifies when its score is >= the group's
    ``100 * (1 - top_frac)``-th percentile (linear interpolation; 20th for the default 0.8, ties at
    the threshold included) and, if ``min_score`` is set, >= ``min_score``. With 0/1 rewards the 20th
    percentile is often 0, which would reward short wrong answers: set ``min_score: 1.0`` there.
    ``length`` is the completion's length in tokens when the caller gives token counts, else in
    characters; lengths <= 0 get no bonus.
    """
    if not scores:
        return []
    stat = max(scores) if group_stat == "max" else sum(scores) / len(scores)
    if min_group_score is not None and stat < min_group_score:
        return list(scores)
    threshold = percentile(scores, 100.0 * (1.0 - top_frac))
    out = []
    for score, length in zip(scores, lengths):
        eligible = score >= threshold and (min_score is None or score >= min_score) and length > 0
        out.append(score + coef * 4.0 / math.sqrt(length) if eligible else score)
    return out


def _validate_overlong(params: dict[str, Any]) -> None:
    max_len, buffer = params.get("max_len"), params.get("buffer")
    for key, value in (("max_len", max_len), ("buffer", buffer)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"overlong_penalty: {key} must be a positive integer")
    if buffer > max_len:
        raise ValueError("overlong_penalty: buffer must be <= max_len")
    _number(params, "coef", low=0.0)


@register_group_transform("overlong_penalty", validate=_validate_overlong)
def overlong_penalty(
    scores: list[float],
    completions: list[str],
    samples: list[Sample],
    lengths: list[int],
    *,
    max_len: int = 4096,
    buffer: int = 512,
    coef: float = 1.0,
) -> list[float]:
    """DAPO's soft overlong punishment, added to each score (per completion; the group is not used).

    With ``L = length`` and ``start = max_len - buffer``: 0 for ``L <= start``, then
    ``-coef * (L - start) / buffer`` rising linearly to ``-coef`` at ``L = max_len``, and ``-coef``
    beyond. ``max_len`` should be the generation limit in the same unit as the lengths (tokens).
    """
    start = max_len - buffer
    out = []
    for score, length in zip(scores, lengths):
        penalty = 0.0 if length <= start else min(1.0, (length - start) / buffer)
        out.append(score - coef * penalty)
    return out


def apply_to_groups(transforms: list[tuple[GroupTransformSpec, dict]], scores: list[float], completions: list[str],
                    samples: list[Sample], lengths: list[int], members: list[int]) -> list[tuple[str, list[float]]]:
    """Run ``transforms`` in order on the group whose indices are ``members``; returns
    ``(transform name, scores of those members after it)`` per step, the last being the final scores.
    """
    current = [scores[i] for i in members]
    steps: list[tuple[str, list[float]]] = []
    group_completions = [completions[i] for i in members]
    group_samples = [samples[i] for i in members]
    group_lengths = [lengths[i] for i in members]
    for spec, params in transforms:
        new = spec.fn(list(current), group_completions, group_samples, group_lengths, **params)
        new = [float(x) for x in new]
        if len(new) != len(current):
            raise ValueError(f"group transform {spec.name!r} returned {len(new)} scores for a group of {len(current)}")
        if not all(math.isfinite(x) for x in new):
            raise ValueError(f"group transform {spec.name!r} returned a non-finite score")
        steps.append((spec.name, new))
        current = new
    return steps
