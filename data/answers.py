r"""Reading answers out of text: the answer region of a completion, ``\boxed{...}`` contents, numbers and fractions.

A leaf module (it imports nothing from this repository), so the dataset preprocessors and the answer
rewards read a box, a number or a fraction the same way, and data never imports rewards.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

MAX_ANSWER_CHARS = 1000
NO_BOXED_OR_TAG = "no \\boxed or <answer> answer"

_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


def answer_region(completion: str, require_answer_tag: bool = False) -> tuple[str | None, str]:
    """The part of a completion that holds the final answer, and where it came from.

    - the content of the last complete ``<answer>...</answer>`` block, if any;
    - else (unless ``require_answer_tag``) the text after the last ``</think>``;
    - else, when a ``<think>`` is opened but never closed, nothing (the answer was cut off);
    - else the whole completion.
    Returns ``(None, reason)`` when there is no region.
    """
    close = completion.rfind(_ANSWER_CLOSE)
    if close != -1:
        open_ = completion.rfind(_ANSWER_OPEN, 0, close)
        if open_ != -1:
            return completion[open_ + len(_ANSWER_OPEN):close], "answer_tag"
    if require_answer_tag:
        return None, "no <answer> tag"
    think_close = completion.rfind(_THINK_CLOSE)
    if think_close != -1:
        return completion[think_close + len(_THINK_CLOSE):], "after_think"
    if _THINK_OPEN in completion:
        return None, "unterminated <think>"
    return completion, "whole"


def thinking_text(completion: str) -> str:
    """The text up to the first ``</think>`` (after a leading ``<think>`` if any); empty without ``</think>``."""
    close = completion.find(_THINK_CLOSE)
    if close == -1:
        return ""
    head = completion[:close]
    open_ = head.find(_THINK_OPEN)
    return head[open_ + len(_THINK_OPEN):] if open_ != -1 else head


BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
"Where a ``\\boxed{`` or ``\\fbox{`` opens; its content starts at the match's end."


def find_boxed(text: str) -> tuple[list[str], bool]:
    r"""Contents of every top-level ``\boxed{...}`` (or ``\fbox``) in order, and whether the last one is unclosed.

    Braces are matched with nesting; ``\{`` and ``\}`` are escaped braces. Linear in ``len(text)``.
    """
    found: list[str] = []
    pos = 0
    while True:
        match = BOXED_RE.search(text, pos)
        if match is None:
            return found, False
        start = match.end()
        depth, i, n = 1, start, len(text)
        while i < n:
            ch = text[i]
            if ch == "\\":
                i += 2
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        if depth != 0:
            return found, True
        found.append(text[start:i])
        pos = i + 1


def last_boxed(text: str) -> str | None:
    r"""Content of the last complete ``\boxed{...}`` (nested braces matched), stripped; None when there is none."""
    found, _ = find_boxed(text)
    return found[-1].strip() if found else None


_SPACE_RE = re.compile(r"\s+")


def canonical(answer: str) -> str:
    """Whitespace-insensitive form used to tell repeated answers from different ones."""
    return _SPACE_RE.sub("", answer)


def boxed_or_tagged_answer(completion: str, require_answer_tag: bool = False,
                           reject_hedging: bool = False) -> tuple[str | None, str]:
    """The final answer text: the last boxed answer of the answer region, else a bare ``<answer>`` body.

    Returns ``(None, reason)`` when there is none, the box is unclosed, or (``reject_hedging``) the
    region holds different boxed answers. Shared by the choice and numeric rewards.
    """
    region, where = answer_region(completion, require_answer_tag)
    if region is None:
        return None, where
    boxes, unclosed = find_boxed(region)
    if unclosed:
        return None, "unclosed \\boxed"
    if boxes:
        if reject_hedging and len({canonical(b) for b in boxes}) > 1:
            return None, "hedged: several different boxed answers"
        return boxes[-1], "boxed"
    if where == "answer_tag":
        return region, "answer_tag"
    return None, NO_BOXED_OR_TAG


# --- cheap normalisation -------------------------------------------------------------------------

_WRAPPERS_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_DROP_RE = re.compile(r"\\[,;:! ]|\\left|\\right|\\displaystyle|\\?\$")
_TRAILING_RE = re.compile(r"(?:\\?%|\^\s*\{?\\circ\}?|\\degree|[.。])+$")


def normalize_answer(answer: str) -> str:
    """A light textual normal form: no formatting wrappers, spacing commands, ``$``, trailing % or period."""
    text = answer.strip()
    for _ in range(3):  # nested wrappers like \text{\textbf{x}}
        new = _WRAPPERS_RE.sub(r"\1", text)
        if new == text:
            break
        text = new
    text = _DROP_RE.sub("", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _TRAILING_RE.sub("", text.strip())
    return _SPACE_RE.sub(" ", text).strip()


_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_WORD_RE = re.compile(r"[A-Za-z]{4,}")


def looks_like_text(answer: str) -> bool:
    """Prose or code rather than math: a 4+ letter word outside LaTeX commands and \\text{} (math uses
    single-letter variables). Such answers are only compared as text: the LaTeX parser needs up to a
    second to give up on them.
    """
    stripped = _COMMAND_RE.sub(" ", _WRAPPERS_RE.sub(" ", answer))
    return _WORD_RE.search(stripped) is not None


# --- numbers and fractions -------------------------------------------------------------------------

_PLAIN_NUMBER_RE = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[+-]?\.\d+")


def plain_number(text: str) -> Decimal | None:
    """The value of a plain integer/decimal (thousands commas allowed), else None."""
    if len(text) > 100 or not _PLAIN_NUMBER_RE.fullmatch(text):
        return None
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


# A number as answers write it: thousands commas, decimals, an exponent.
_NUM = r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d{1,3})?|[+-]?\.\d+(?:[eE][+-]?\d{1,3})?"
_NUMBER_RE = re.compile(_NUM)
_FRAC_RE = re.compile(rf"([+-])?\\frac\s*(?:\{{\s*({_NUM})\s*\}}|(\d))\s*(?:\{{\s*({_NUM})\s*\}}|(\d))")
_SLASH_RE = re.compile(rf"({_NUM})\s*/\s*({_NUM})")
_INTEGER_RE = re.compile(r"[+-]?\d{1,50}")
_SCI_RE = re.compile(rf"({_NUM})\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*(?:\{{\s*([+-]?\d{{1,3}})\s*\}}|([+-]?\d))")
# "12 cm", "9.8 m/s^2", "€5": a leading number then only a unit; "2x" or "x+1" are not numbers.
_UNIT = r"[A-Za-z][A-Za-z .\-/]*(?:\^\s*\{?-?\d\}?[A-Za-z .\-/]*)*"
_WITH_UNIT_RE = re.compile(rf"(?:[€£¥]\s*)?({_NUM})\s+{_UNIT}")
# "100 or ninety", "100 or so", "5 and a half": a hedge or a second value, not a unit.
_NOT_A_UNIT_RE = re.compile(r"(?i)\b(?:or|and)\b")


def split_fraction(text: str) -> tuple[bool, str, str] | None:
    r"""``(negative, numerator, denominator)`` of ``\frac{a}{b}``, ``\frac12``, ``-\frac{a}{b}`` or ``a/b`` written
    whole as ``text``, a and b numbers (text as written, signs kept); None for anything else."""
    match = _FRAC_RE.fullmatch(text)
    if match:
        sign, num_braced, num_digit, den_braced, den_digit = match.groups()
        return sign == "-", num_braced or num_digit, den_braced or den_digit
    match = _SLASH_RE.fullmatch(text)
    if match:
        return False, match.group(1), match.group(2)
    return None


def simple_rational(text: str) -> Fraction | None:
    r"""The exact value of a plain number, or of a fraction (``split_fraction``) of integers up to 50 digits; else None."""
    number = plain_number(text)
    if number is not None:
        return Fraction(number)
    parts = split_fraction(text)
    if parts is None or not (_INTEGER_RE.fullmatch(parts[1]) and _INTEGER_RE.fullmatch(parts[2])):
        return None
    negative, num, den = parts[0], int(parts[1]), int(parts[2])
    if den == 0:
        return None
    return Fraction(-num if negative else num, den)


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
    if _NUMBER_RE.fullmatch(text):
        return _to_float(text)
    fraction = split_fraction(text)
    if fraction is not None:
        negative, num, den = fraction[0], _to_float(fraction[1]), _to_float(fraction[2])
        if den == 0:
            return None
        return (-1 if negative else 1) * num / den
    sci = _SCI_RE.fullmatch(text)
    if sci:
        try:
            return _to_float(sci.group(1)) * 10.0 ** int(sci.group(2) or sci.group(3))
        except OverflowError:
            return None
    with_unit = _WITH_UNIT_RE.fullmatch(text)
    if with_unit and not _NOT_A_UNIT_RE.search(text[with_unit.end(1):]):
        return _to_float(with_unit.group(1))
    return None
