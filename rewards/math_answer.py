r"""``boxed_answer``: the final ``\boxed{...}`` compared with the gold answer by mathematical equivalence.

Reading the answer (region, boxes, numbers, fractions) is `data.answers`, shared with the other rewards and data.
"""

from __future__ import annotations

import logging
import math
import re
from functools import lru_cache
from typing import Any

from data.answers import (MAX_ANSWER_CHARS, answer_region, canonical, find_boxed, looks_like_text, normalize_answer,
                          plain_number, simple_rational)
from data.schema import Sample
from rewards.base import RewardOutput, register_reward


def final_boxed(completion: str, require_answer_tag: bool = False,
                reject_hedging: bool = False) -> tuple[str | None, dict[str, Any]]:
    """The last boxed answer of a completion's answer region, or ``(None, details with a reason)``.

    A response that corrects itself is read by its last box, as verl and math-verify grade; with
    ``reject_hedging`` two or more different boxed answers count as hedging and give None.
    """
    region, where = answer_region(completion, require_answer_tag)
    if region is None:
        return None, {"extracted": None, "reason": where}
    boxes, unclosed = find_boxed(region)
    if unclosed:
        return None, {"extracted": None, "reason": "unclosed \\boxed", "region": where}
    if not boxes:
        return None, {"extracted": None, "reason": "no \\boxed answer", "region": where}
    last = boxes[-1].strip()
    if reject_hedging and len({canonical(b) for b in boxes}) > 1:
        return None, {"extracted": _clip(last), "reason": "hedged: several different boxed answers", "region": where}
    if not last:
        return None, {"extracted": "", "reason": "empty \\boxed", "region": where}
    if len(last) > MAX_ANSWER_CHARS:
        return None, {"extracted": _clip(last), "reason": f"answer longer than {MAX_ANSWER_CHARS} chars", "region": where}
    return last, {"extracted": last, "region": where}


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --- guards against answers whose evaluation explodes ----------------------------------------------

_DIGITS_RE = re.compile(r"\d+")
_MAX_EXPONENT_DIGITS = 5  # 2^{2023} is fine, 9^{999999} is not
_MAX_FACTORIAL_DIGITS = 3
# All numeric powers together may have about this many digits: 2^{2023} has 610, and sympy needs
# seconds for the gcd of two 90,000-digit numbers (\frac{9^{99999}}{8^{99999}}).
_MAX_POWER_DIGITS = 20_000
_FACTORIAL_DIGITS = 3000.0  # digits of n! for the n <= 1000 that the factorial check lets through
# The LaTeX parser (an ANTLR grammar in which "(", "[" and "{" open a group, a tuple, an interval or a
# set) backtracks over bare brackets: its time doubles with each nesting level of "{...}" and grows
# with the length of the bracketed text, e.g. 1.3 s for "(x+x+...+x)" with 100 terms.
_MAX_BARE_DEPTH = 3
_MAX_BARE_TOKENS = 80
_MAX_TOKENS = 400  # even outside brackets, chains such as "-----...-3" or "x y x y ..." cost 1-2 ms a token
_TOKEN_RE = re.compile(r"\\[A-Za-z]+|\\.|\d+(?:\.\d+)?|\S")
_ARGUMENT_BEFORE = ("}", "]", "^", "_")  # "{" after these (or after a command) is an argument, not a group


def _bare_brackets(answer: str) -> tuple[int, int, int]:
    """Deepest nesting of bare brackets (``(``, ``[``, ``\\{`` and ``{`` that is no command argument),
    the number of tokens inside them, each counted once per bare bracket around it, and all tokens."""
    stack: list[bool] = []
    depth = deepest = tokens = count = 0
    previous = ""
    for count, match in enumerate(_TOKEN_RE.finditer(answer), 1):
        token = match.group()
        if token in ("(", "[", "\\{", "{"):
            argument = previous in _ARGUMENT_BEFORE or (previous[:1] == "\\" and previous[1:].isalpha())
            bare = token != "{" or not argument
            stack.append(bare)
            depth += bare
            deepest = max(deepest, depth)
        elif token in (")", "]", "\\}", "}"):
            if stack and stack.pop():
                depth -= 1
        else:
            tokens += depth
        previous = token
    return deepest, tokens, count


def _matching_open(text: str, close: int) -> int:
    """Index of the bracket that the bracket at ``text[close]`` closes (any of ``([{``), or -1."""
    depth = 0
    for k in range(close, -1, -1):
        ch = text[k]
        if ch in ")]}":
            depth += 1
        elif ch in "([{":
            depth -= 1
            if depth == 0:
                return k
    return -1


def _power_base(text: str, caret: int) -> tuple[str, float]:
    """What the ``^`` at ``text[caret]`` raises: ``("index", 0)`` for the limits of ``\\sum_{k=1}^{n}``
    and subscripts, ``("number", digits)`` for an integer (digits: log10 of it, or an upper bound),
    else ``("symbol", 0)``."""
    j = caret
    while j > 0 and text[j - 1] == " ":
        j -= 1
    if j == 0:
        return "symbol", 0.0
    last = text[j - 1]
    if last == "!":
        return "number", _FACTORIAL_DIGITS
    if last.isdigit() or last == ".":
        k = j
        while k > 0 and (text[k - 1].isdigit() or text[k - 1] == "."):
            k -= 1
        if text[:k].rstrip(" ").endswith("_"):
            return "index", 0.0
        whole = text[k:j].split(".")[0].lstrip("0")
        if not whole:
            return "number", 0.0
        value = int(whole[:300])
        return "number", math.log10(value) + max(0, len(whole) - 300)
    if last in ")]}":
        start = _matching_open(text, j - 1)
        if start == -1:
            return "symbol", 0.0
        if text[:start].rstrip(" ").endswith("_"):
            return "index", 0.0
        group = text[start + 1:j - 1]
        if "!" in group:
            return "number", _FACTORIAL_DIGITS
        if re.search(r"[A-Za-z]", group):
            return "symbol", 0.0
        return "number", float(sum(len(d) for d in _DIGITS_RE.findall(group)))
    if last.isalpha() and text[:j - 1].rstrip(" ").endswith("_"):
        return "index", 0.0
    return "symbol", 0.0


def _exponent_bound(exponent: str) -> int:
    """An upper bound of the exponent's absolute value (10^digits when it is not a plain integer)."""
    text = exponent.strip().replace(" ", "")
    if re.fullmatch(r"[+-]?\d+", text):
        return abs(int(text))
    digits = sum(len(d) for d in _DIGITS_RE.findall(text))
    return 10 ** digits - 1 if digits else 0


def _operand_after(text: str, i: int) -> tuple[str, int]:
    """The operand that starts at ``text[i]``: a brace group, a command name or a digit run/char."""
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    if i >= n:
        return "", i
    if text[i] == "{":
        depth, j = 0, i
        while j < n:
            if text[j] == "\\":
                j += 2
                continue
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1:j], j + 1
            j += 1
        return text[i + 1:], n
    if text[i] == "\\":
        j = i + 1
        while j < n and text[j].isalpha():
            j += 1
        return text[i:max(j, i + 2)], max(j, i + 2)
    if text[i].isdigit():
        j = i
        while j < n and text[j].isdigit():
            j += 1
        return text[i:j], j
    return text[i], i + 1


def explosive_reason(answer: str) -> str | None:
    """Why evaluating ``answer`` could take unbounded time or memory (power towers, huge powers or factorials,
    or brackets that the LaTeX parser needs seconds for)."""
    if "**" in answer:
        return "python-style power"
    depth, bare_tokens, tokens = _bare_brackets(answer)
    if tokens > _MAX_TOKENS:
        return "too many tokens"
    if depth > _MAX_BARE_DEPTH:
        return "brackets nested too deep"
    if bare_tokens > _MAX_BARE_TOKENS:
        return "bracketed expression too long"
    power_digits = 0.0
    largest_symbolic_exponent = 0
    i = answer.find("^")
    while i != -1:
        exponent, end = _operand_after(answer, i + 1)
        if "^" in exponent:
            return "power tower"
        if "!" in exponent:
            return "factorial in an exponent"
        rest = answer[end:].lstrip(" ")
        if rest.startswith("^"):
            return "chained powers"
        if sum(len(d) for d in _DIGITS_RE.findall(exponent)) > _MAX_EXPONENT_DIGITS:
            return "exponent too large"
        kind, base_digits = _power_base(answer, i)
        if kind == "number":
            power_digits += _exponent_bound(exponent) * base_digits
        elif kind == "symbol":
            largest_symbolic_exponent = max(largest_symbolic_exponent, _exponent_bound(exponent))
        i = answer.find("^", i + 1)
    if power_digits > _MAX_POWER_DIGITS:
        return "power too large"
    i = answer.find("!")
    while i != -1:
        run = i
        while run < len(answer) and answer[run] == "!":
            run += 1
        j = i
        while j > 0 and answer[j - 1] == " ":
            j -= 1
        before = answer[max(0, j - 200):j]
        if run - i > 2:
            return "repeated factorial"
        if before.endswith((")", "}", "]")):
            # a group such as (10^3)!: judge by how many digits it holds
            start = _matching_open(before, len(before) - 1)
            group = before[start + 1:] if start != -1 else before[-100:]
            exponent = start != -1 and before[:start].rstrip(" ").endswith("^")  # 9^{9}! may be (9^9)!
            too_big = (exponent or "^" in group or "!" in group or run - i > 1
                       or sum(len(d) for d in _DIGITS_RE.findall(group)) > _MAX_FACTORIAL_DIGITS)
        else:
            match = re.search(r"\d+$", before)
            limit = 6 if run - i > 1 else 1000  # 7!! read as (7!)! is 5040!
            too_big = match is not None and (
                len(match.group()) > 6 or int(match.group()) > limit
                # 9^9! may be read as (9^9)!
                or before[:match.start()].rstrip(" ").endswith(("^", "^{"))
            )
        if too_big:
            return "factorial too large"
        i = answer.find("!", run)
    if "\\binom" in answer or "\\prod" in answer or "\\sum" in answer or "\\Gamma" in answer:
        numbers = _DIGITS_RE.findall(answer)
        if any(len(d) > 4 for d in numbers):
            return "large combinatorial expression"
        if "\\Gamma" in answer and ("^" in answer or "!" in answer):
            return "large combinatorial expression"  # Gamma(9^9) = (9^9 - 1)!
        # A sum or product repeats its powers up to the largest number times.
        largest = max((int(d) for d in numbers), default=1)
        if (power_digits + largest_symbolic_exponent) * max(largest, 1) > _MAX_POWER_DIGITS:
            return "large combinatorial expression"
    return None


# --- math-verify -------------------------------------------------------------------------------

_MV: dict[str, Any] = {}


def _math_verify():
    """math-verify, imported once and configured to extract only the boxed content we hand it."""
    if not _MV:
        import math_verify
        from math_verify import LatexExtractionConfig

        # We disable its signal-based timeouts (see below), so silence the warning it logs about that.
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        _MV["parse"] = math_verify.parse
        _MV["verify"] = math_verify.verify
        _MV["config"] = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]
    return _MV


@lru_cache(maxsize=4096)
def _parse_latex(answer: str) -> tuple:
    r"""Parse one answer given as the content of a box. Only LaTeX extraction is used: math-verify's
    expression extraction goes through sympy's ``parse_expr`` (``eval``), which must never see model output.
    Timeouts are ours (executor), since math-verify's use ``signal.alarm``.
    """
    mv = _math_verify()
    return tuple(mv["parse"]("\\boxed{" + answer + "}", extraction_config=mv["config"],
                             fallback_mode="no_fallback", parsing_timeout=None))


@lru_cache(maxsize=8192)
def _equivalent(gold: str, pred: str) -> tuple[bool, str]:
    gold_norm, pred_norm = normalize_answer(gold), normalize_answer(pred)
    if not pred_norm:
        return False, "empty answer"
    if gold_norm == pred_norm:
        return True, "exact match"
    if gold_norm.isascii() and re.fullmatch(r"[A-Za-z][A-Za-z \-']*", gold_norm) and gold_norm.casefold() == pred_norm.casefold():
        return True, "text match"
    gold_num, pred_num = plain_number(gold_norm), plain_number(pred_norm)
    if gold_num is not None and pred_num is not None:
        return gold_num == pred_num, "numeric " + ("match" if gold_num == pred_num else "mismatch")
    # Rationals are compared exactly without parsing LaTeX (speed). A mismatch involving a decimal is
    # left to math-verify, which allows rounding (0.333333 vs 1/3).
    gold_q, pred_q = simple_rational(gold_norm), simple_rational(pred_norm)
    if gold_q is not None and pred_q is not None:
        if gold_q == pred_q:
            return True, "rational match"
        if "." not in gold_norm and "." not in pred_norm:
            return False, "rational mismatch"
    if looks_like_text(pred) or looks_like_text(gold):
        return False, "text mismatch"
    reason = explosive_reason(pred_norm)
    if reason is not None:
        return False, f"unsafe answer ({reason})"
    if explosive_reason(gold_norm) is not None:
        return False, "mismatch (gold not safely comparable)"
    # math-verify gets the original text: its own normalisation knows units, \text and more.
    gold_parsed = _parse_latex(gold.strip())
    pred_parsed = _parse_latex(pred.strip())
    if not gold_parsed:
        return False, "gold answer not parseable"
    if not pred_parsed:
        return False, "answer not parseable"
    ok = _math_verify()["verify"](list(gold_parsed), list(pred_parsed), timeout_seconds=None)
    return bool(ok), "equivalent" if ok else "not equivalent"


def gold_answers(ground_truth: Any) -> list[str]:
    """Gold answers as strings: a list means any of them; a boxed gold is unwrapped."""
    values = ground_truth if isinstance(ground_truth, (list, tuple)) else [ground_truth]
    golds = []
    for value in values:
        if value is None or isinstance(value, (dict, list, tuple)):
            continue
        text = str(value).strip()
        if isinstance(value, bool):
            text = text.lower()
        boxes, _ = find_boxed(text)
        if boxes:
            text = boxes[-1].strip()
        if text.startswith("$") and text.endswith("$"):
            text = text.strip("$").strip()
        if text:
            golds.append(text)
    return golds


def warmup() -> None:
    """Import math-verify and build its parser once (workers call this before taking jobs)."""
    # Not a pair of plain rationals: those are compared without math-verify and would warm up nothing.
    _equivalent(r"\frac{\sqrt{2}}{2}", r"\dfrac{1}{\sqrt{2}}")


@register_reward("boxed_answer")
def boxed_answer(completion: str, sample: Sample, *, require_answer_tag: bool = False,
                 reject_hedging: bool = False) -> RewardOutput:
    r"""1.0 when the final ``\boxed{...}`` equals ``sample.ground_truth`` mathematically, else 0.0.

    The answer is looked for in the last ``<answer>...</answer>`` block if there is one, else after the
    last ``</think>``, else in the whole completion (a ``<think>`` that is never closed gives 0).
    ``require_answer_tag``: score 0 when there is no ``<answer>`` block. Several boxes: the last counts
    (a self-correction); ``reject_hedging``: two or more different boxed answers score 0 instead.
    Scores 0 for: no box, an unclosed or empty box,
    an answer over 1000 characters, and answers whose evaluation could explode (power towers,
    huge exponents, powers of more than 20,000 digits, huge or repeated factorials) or that the LaTeX
    parser needs seconds for (brackets nested more than 3 deep, more than 80 tokens inside brackets,
    more than 400 tokens); see ``explosive_reason``. Such answers still match a gold answer written the
    same way. Plain numbers and integer fractions are compared exactly; everything else by math-verify
    (LaTeX parsing only). A list ground truth accepts any of its entries.
    """
    extracted, details = final_boxed(completion, require_answer_tag, reject_hedging)
    if extracted is None:
        return RewardOutput(0.0, details)
    golds = gold_answers(sample.ground_truth)
    if not golds:
        details["reason"] = "sample has no usable ground_truth"
        return RewardOutput(0.0, details)
    reason = "mismatch"
    for gold in golds:
        ok, reason = _equivalent(gold, extracted)
        if ok:
            details["reason"] = reason
            return RewardOutput(1.0, details)
    details["reason"] = reason
    return RewardOutput(0.0, details)
