"""``format``: 1.0 when a completion follows the expected output layout, else 0.0."""

from __future__ import annotations

import re
from typing import Any

from data.answers import answer_region, find_boxed
from data.schema import Sample
from rewards.base import RewardOutput, register_reward
from rewards.math_answer import final_boxed

MODES = ("think_answer", "r4b_thinking", "r4b_non_thinking", "boxed")
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_CLOSING = " \t\n.$)]"  # what may follow a final box: sentence end, closing math delimiters
_ENDS_WITH_BOX_OPENER = re.compile(r"\\(?:boxed|fbox)\s*\{$")


def _validate(params: dict[str, Any]) -> None:
    mode = params.get("mode", "think_answer")
    if mode not in MODES:
        raise ValueError(f"format: unknown mode {mode!r}; modes: {', '.join(MODES)}")
    min_chars = params.get("min_think_chars", 0)
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 0:
        raise ValueError("format: min_think_chars must be a non-negative integer")
    if not isinstance(params.get("prompt_opens_think", False), bool):
        raise ValueError("format: prompt_opens_think must be true or false")


def _one_final_box(text: str) -> tuple[bool, str]:
    answer, details = final_boxed(text)
    if answer is None:
        return False, details["reason"]
    region, _ = answer_region(text)
    boxes, _ = find_boxed(region)
    if len(boxes) != 1:
        return False, f"{len(boxes)} boxes"
    # The region, less closing punctuation, must end with that box: its opener, content, brace.
    body = region.rstrip(_CLOSING)
    if not (body.endswith(boxes[0] + "}") and _ENDS_WITH_BOX_OPENER.search(body[: -len(boxes[0]) - 1])):
        return False, "text after the box"
    return True, "ok"


def _counts(text: str) -> dict[str, int]:
    return {tag: text.count(tag) for tag in _TAGS}


def _think_answer(text: str, min_think_chars: int, prompt_opens_think: bool) -> tuple[bool, str]:
    counts = _counts(text)
    expected = {"<think>": 0 if prompt_opens_think else 1, "</think>": 1, "<answer>": 1, "</answer>": 1}
    for tag, want in expected.items():
        if counts[tag] != want:
            return False, f"expected {want} {tag}, found {counts[tag]}"
    body = text.strip()
    if not prompt_opens_think:
        if not body.startswith("<think>"):
            return False, "text before <think>"
        body = body[len("<think>"):]
    think, _, rest = body.partition("</think>")
    rest = rest.strip()
    if not rest.startswith("<answer>"):
        return False, "text between </think> and <answer>" if "<answer>" in rest else "<answer> before </think>"
    if not rest.endswith("</answer>"):
        return False, "text after </answer>"
    answer = rest[len("<answer>"):-len("</answer>")]
    if not answer.strip():
        return False, "empty answer"
    if len(think.strip()) < min_think_chars:
        return False, f"thinking shorter than {min_think_chars} chars"
    return True, "ok"


def _r4b(text: str, thinking: bool, min_think_chars: int) -> tuple[bool, str]:
    if not text.startswith("<think>\n"):
        return False, "does not start with '<think>\\n'"
    counts = _counts(text)
    if counts["<think>"] != 1 or counts["</think>"] != 1:
        return False, f"expected one <think> and one </think>, found {counts['<think>']} and {counts['</think>']}"
    think, _, answer = text[len("<think>"):].partition("</think>")
    if not answer.strip():
        return False, "empty response after </think>"
    if thinking:
        if not think.strip():
            return False, "empty thinking"
        if len(think.strip()) < min_think_chars:
            return False, f"thinking shorter than {min_think_chars} chars"
    elif think != "\n\n":
        return False, "non-thinking response must start with '<think>\\n\\n</think>'"
    return True, "ok"


@register_reward("format", validate=_validate)
def format_reward(
    completion: str,
    sample: Sample,
    *,
    mode: str = "think_answer",
    min_think_chars: int = 0,
    prompt_opens_think: bool = False,
) -> RewardOutput:
    """1.0 when the completion has the layout of ``mode``, else 0.0 (details give the reason).

    ``think_answer``: after stripping surrounding whitespace the completion is exactly
    ``<think>T</think>`` then optional whitespace then ``<answer>A</answer>``, nothing else outside;
    each of the four tags appears exactly once, A is not blank and T has at least ``min_think_chars``
    non-blank-edged characters. With ``prompt_opens_think`` the prompt already ends with ``<think>``,
    so the completion must contain no ``<think>`` and starts directly with T. (The trainer hands rewards
    the response with a ``<think>`` its chat template opened put back, so recipes leave this off; it is
    for completions scored outside the trainer.)
    ``r4b_thinking``: starts exactly with ``<think>\\n``, has one ``<think>`` and one ``</think>``,
    the thinking is not blank (and at least ``min_think_chars`` long) and a non-blank response follows.
    ``r4b_non_thinking``: starts exactly with ``<think>\\n\\n</think>``, no other think tags, and a
    non-blank response follows.
    ``boxed``: the answer region (as ``boxed_answer`` reads it) has exactly one ``\\boxed{...}``, closed and
    not empty, and ends with it (only closing punctuation after it), whatever it holds. One final box, so
    a policy cannot collect it by boxing everything or by running to the length limit; weigh it well
    below correctness.
    """
    _validate({"mode": mode, "min_think_chars": min_think_chars, "prompt_opens_think": prompt_opens_think})
    if mode == "think_answer":
        ok, reason = _think_answer(completion, min_think_chars, prompt_opens_think)
    elif mode == "boxed":
        ok, reason = _one_final_box(completion)
    else:
        ok, reason = _r4b(completion, mode == "r4b_thinking", min_think_chars)
    return RewardOutput(1.0 if ok else 0.0, {"mode": mode, "reason": reason})
