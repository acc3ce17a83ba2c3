"""``multiple_choice``: the chosen option letter compared with the gold letter."""

from __future__ import annotations

import re
import string
from typing import Any

from data.answers import NO_BOXED_OR_TAG, answer_region, boxed_or_tagged_answer, normalize_answer
from data.schema import Sample
from rewards.base import RewardOutput, register_reward

_ALL_LETTERS = string.ascii_uppercase
_DEFAULT_LETTERS = "ABCDEFGHIJ"  # up to ten options (MMLU-Pro style) when the sample lists none
_ANSWER_LINE_RE = re.compile(r"(?i)\banswer\b(?:\s*[:：]|\s+is\b\s*[:：]?)[ \t]*([^\n]{1,200})")
_LABEL_RE = re.compile(r"^\s*[\(\[]?([A-Za-z])[\)\]]?\s*[.):：]\s*|^\s*[\(\[]([A-Za-z])[\)\]]\s*")
_LETTER_ONLY_RE = re.compile(r"^[\(\[]?([A-Za-z])[\)\]]?[.):]?$")
_LETTER_TOKEN_RE = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])")
_PUNCT_RE = re.compile(r"[\s\"'`*_.,;:!?()\[\]{}]+")


def _options(choices: Any) -> dict[str, str]:
    """Map option letter -> option text from a list (``"Paris"`` or ``"A. Paris"``) or a dict."""
    if isinstance(choices, dict):
        return {str(k).strip().upper(): str(v) for k, v in choices.items()}
    if not isinstance(choices, (list, tuple)):
        return {}
    options = {}
    for letter, text in zip(_ALL_LETTERS, choices):
        text = str(text)
        label = _LABEL_RE.match(text)
        if label and (label.group(1) or label.group(2)).upper() == letter:
            text = text[label.end():]
        options[letter] = text
    return options


def _text_key(text: str) -> str:
    return _PUNCT_RE.sub(" ", normalize_answer(text)).strip().casefold()


def _resolve(candidate: str, options: dict[str, str], letters: str) -> tuple[str | None, str]:
    """The letter a candidate answer names, or (None, reason); several letters -> hedged."""
    text = normalize_answer(candidate).strip().strip("*_ ").strip()
    text = text.rstrip(".:;,").strip()
    if not text:
        return None, "empty answer"
    only = _LETTER_ONLY_RE.match(text)
    if only and only.group(1).upper() in letters:
        return only.group(1).upper(), "letter"
    key = _text_key(text)
    matches = [letter for letter, option in options.items() if _text_key(option) == key]
    if len(matches) == 1:
        return matches[0], "option text"
    label = _LABEL_RE.match(text)
    if label:
        letter = (label.group(1) or label.group(2)).upper()
        if letter in letters:
            return letter, "labelled option"
    tokens = {t for t in _LETTER_TOKEN_RE.findall(text) if t in letters}
    if len(tokens) == 1:
        return tokens.pop(), "letter in text"
    if len(tokens) > 1:
        return None, "hedged: several letters " + ",".join(sorted(tokens))
    return None, "no option letter found"


def _candidate(completion: str, require_answer_tag: bool, reject_hedging: bool) -> tuple[str | None, str]:
    answer, where = boxed_or_tagged_answer(completion, require_answer_tag, reject_hedging)
    if answer is not None or where != NO_BOXED_OR_TAG:
        return answer, where
    # No box and no <answer> tag: fall back to an "Answer: C" line or a short bare response.
    region, _ = answer_region(completion, require_answer_tag)
    lines = _ANSWER_LINE_RE.findall(region[-5000:])
    if lines:
        return lines[-1], "answer line"
    if len(region.strip()) <= 40:
        return region, "short response"
    return None, "no final answer found"


@register_reward("multiple_choice")
def multiple_choice(
    completion: str,
    sample: Sample,
    *,
    require_answer_tag: bool = False,
    choices_field: str = "choices",
    reject_hedging: bool = False,
) -> RewardOutput:
    r"""1.0 when the chosen option equals the gold option, else 0.0.

    The final answer is read from the answer region (see ``boxed_answer``): the last ``\boxed{...}``,
    else the ``<answer>`` content, else the last ``Answer: ...``/``answer is ...`` line, else a short
    whole response. It may be a letter (``C``, ``(C)``, ``C.``, ``C) text``) or, when
    ``sample.field(choices_field)`` is a list or dict of options, an option's text. Two different option
    letters in the answer (``A or B``) score 0, and so do two different boxes with ``reject_hedging``. The ground truth is a letter or an option
    text; without options, option texts are compared case-insensitively.
    """
    options = _options(sample.field(choices_field))
    letters = "".join(options) if options else _DEFAULT_LETTERS
    candidate, source = _candidate(completion, require_answer_tag, reject_hedging)
    if candidate is None:
        return RewardOutput(0.0, {"extracted": None, "reason": source})
    if len(candidate) > 1000:
        return RewardOutput(0.0, {"extracted": candidate[:200] + "...", "reason": "answer too long"})
    gold_raw = sample.ground_truth
    if isinstance(gold_raw, (list, tuple)) and len(gold_raw) == 1:
        gold_raw = gold_raw[0]
    if gold_raw is None or isinstance(gold_raw, (dict, list, tuple, bool)):
        return RewardOutput(0.0, {"extracted": candidate, "reason": "sample has no usable ground_truth"})
    gold_letter, _ = _resolve(str(gold_raw), options, letters)
    chosen, how = _resolve(candidate, options, letters)
    details = {"extracted": candidate.strip(), "chosen": chosen, "gold": gold_letter, "source": source}
    if gold_letter is None:
        # Gold given as free text with no options to map it: compare the texts.
        ok = _text_key(candidate) == _text_key(str(gold_raw)) and bool(_text_key(candidate))
        details["reason"] = "text match" if ok else "text mismatch"
        return RewardOutput(1.0 if ok else 0.0, details)
    if chosen is None:
        details["reason"] = how
        return RewardOutput(0.0, details)
    details["reason"] = f"{how}: " + ("match" if chosen == gold_letter else "mismatch")
    return RewardOutput(1.0 if chosen == gold_letter else 0.0, details)
