"""``numeric``: continuous credit for how close the final number is to the gold number."""

from __future__ import annotations

import math
from typing import Any

from data.answers import MAX_ANSWER_CHARS, boxed_or_tagged_answer, find_boxed, parse_number
from data.schema import Sample
from rewards.base import RewardOutput, register_reward


def _validate(params: dict[str, Any]) -> None:
    for key in ("k", "rel_eps"):
        value = params.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"numeric: {key} must be a positive number")


@register_reward("numeric", validate=_validate)
def numeric(
    completion: str,
    sample: Sample,
    *,
    k: float = 1.0,
    rel_eps: float = 1e-9,
    require_answer_tag: bool = False,
    reject_hedging: bool = False,
) -> RewardOutput:
    r"""``exp(-k * |pred - gold| / max(|gold|, rel_eps))`` in [0, 1] for the final number.

    The number comes from the last ``\boxed{...}`` (with ``reject_hedging``, different boxes score 0) or else the
    ``<answer>`` content, in the answer region described for ``boxed_answer``. A gold of 0 makes any
    error relative to ``rel_eps``, i.e. only (near-)exact answers earn credit.
    """
    text, source = boxed_or_tagged_answer(completion, require_answer_tag, reject_hedging)
    if text is None:
        return RewardOutput(0.0, {"extracted": None, "reason": source})
    if len(text) > MAX_ANSWER_CHARS:
        return RewardOutput(0.0, {"extracted": text[:200] + "...", "reason": "answer too long"})
    gold_raw = sample.ground_truth
    if isinstance(gold_raw, (list, tuple)) and len(gold_raw) == 1:
        gold_raw = gold_raw[0]
    if isinstance(gold_raw, bool):
        gold = None
    elif isinstance(gold_raw, (int, float)):
        gold = float(gold_raw)
    elif isinstance(gold_raw, str):
        boxes, _ = find_boxed(gold_raw)
        gold = parse_number(boxes[-1] if boxes else gold_raw)
    else:
        gold = None
    if gold is None or not math.isfinite(gold):
        return RewardOutput(0.0, {"extracted": text.strip(), "reason": "ground_truth is not a number"})
    pred = parse_number(text)
    details: dict[str, Any] = {"extracted": text.strip(), "pred": pred, "gold": gold, "source": source}
    if pred is None or not math.isfinite(pred):
        details["reason"] = "answer is not a single number"
        return RewardOutput(0.0, details)
    error = abs(pred - gold) / max(abs(gold), rel_eps)
    score = math.exp(-k * error) if math.isfinite(error) else 0.0
    details["reason"] = f"relative error {error:.3g}"
    return RewardOutput(score, details)
