"""``numeric``: continuous credit for how close the final number is to the gold number."""

from __future__ import annotations

import math
import re
from typing import Any

from data.schema import Sample
from rewards.base import RewardOutput, register_reward
from rewards.math_answer import MAX_ANSWER_CHARS, boxed_or_tagged_answer, find_boxed, normalize_answer

_NUM = r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d{1,3})?|[+-]?\.\d+(?:[eE][+-]?\d{1,3})?"
_NUMBER_RE = re.compile(rf"^(?:{_NUM})$")
_FRAC_RE = re.compile(rf"^([+-])?\\frac\s*(?:\{{\s*({_NUM})\s*\}}|(\d))\s*(?:\{{\s*({_NUM})\s*\}}|(\d))$")
_SLASH_RE = re.compile(rf"^({_NUM})\s*/\s*({_NUM})$")
_SCI_RE = re.compile(rf"^({_NUM})\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*(?:\{{\s*([+-]?\d{{1,3}})\s*\}}|([+-]?\d))$")
# "12 cm", "9.8 m/s^2", "€5": a leading number then only a unit; "2x" or "x+1" are not numbers.
_UNIT = r"[A-Za-z][A-Za-z .\-/]*(?:\^\s*\{?-?\d\}?[A-Za-z .\-/]*)*"
_WITH_UNIT_RE = re.compile(rf"^(?:[€£¥]\s*)?({_NUM})\s+{_UNIT}$")
# "100 or ninety", "100 or so", "5 and a half": a hedge or a second value, not a unit.
_NOT_A_UNIT_RE = re.compile(r"(?i)\b(?:or|and)\b")


def _to_float(text: str) -> float:
    return float(text.replace(",", ""))


def parse_number(text: str) -> float | None:
    r"""A number written as ``-1,234.5``, ``1.5e3``, ``\frac{3}{4}``, ``3/4`` or ``1.5\times10^{3}``,
    possibly with units or a percent sign around it (then it must be the only number, and the words "or"
    and "and" make it a hedge, not a unit: ``100 or ninety``). None otherwise.
    """
    text = normalize_answer(text).replace("−", "-")
    if not text or len(text) > 200:
        return None
    if _NUMBER_RE.match(text):
        return _to_float(text)
    frac = _FRAC_RE.match(text)
    if frac:
        sign, num_braced, num_digit, den_braced, den_digit = frac.groups()
        num, den = _to_float(num_braced or num_digit), _to_float(den_braced or den_digit)
        if den == 0:
            return None
        return (-1 if sign == "-" else 1) * num / den
    slash = _SLASH_RE.match(text)
    if slash:
        den = _to_float(slash.group(2))
        return None if den == 0 else _to_float(slash.group(1)) / den
    sci = _SCI_RE.match(text)
    if sci:
        try:
            return _to_float(sci.group(1)) * 10.0 ** int(sci.group(2) or sci.group(3))
        except OverflowError:
            return None
    with_unit = _WITH_UNIT_RE.match(text)
    if with_unit and not _NOT_A_UNIT_RE.search(text[with_unit.end(1):]):
        return _to_float(with_unit.group(1))
    return None




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
