r"""``language_consistency``: 1.0 when both the thinking and the answer are written in the prompt's language.

After M-Thinker's language-consistency reward. Language ID runs offline with ``py3langid`` (a naive
Bayes model over byte n-grams shipped inside the package, 140 languages, deterministic).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from typing import Any

from data.answers import BOXED_RE, answer_region, find_boxed, thinking_text
from data.language_codes import normalize_language
from data.schema import Sample
from rewards.base import RewardOutput, register_reward

# Labels the model splits finer than a prompt's language code does.
_LABEL_ALIASES = {"yue": "zh", "wuu": "zh", "nn": "no", "nb": "no", "arz": "ar", "ary": "ar", "uzs": "uz"}

_CODE_BLOCK_RE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_INLINE_CODE_RE = re.compile(r"`[^`\n]*`")
_BEGIN_RE = re.compile(r"\\begin\{([A-Za-z*]{1,40})\}")
_DOLLAR_RE = re.compile(r"\$\$.*?\$\$|\$[^$]*\$", re.DOTALL)
_TAG_RE = re.compile(r"</?[A-Za-z_][\w-]*>")
_COMMAND_RE = re.compile(r"\\(?:[A-Za-z]+\*?|.)")
_SPACES_RE = re.compile(r"\s+")

_IDENTIFIER: Any = None
_LOCK = threading.Lock()


def _identifier():
    """The py3langid model, loaded once per process (about 0.6 s)."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        with _LOCK:
            if _IDENTIFIER is None:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier

                _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _IDENTIFIER


_SUPPORTED: set[str] = set()


def supported_languages() -> set[str]:
    if not _SUPPORTED:
        _SUPPORTED.update(_LABEL_ALIASES.get(label, label) for label in _identifier().labels)
    return _SUPPORTED


def language_probabilities(text: str) -> dict[str, float]:
    """Probability of each language for ``text``, finer labels (``yue``, ``wuu``...) summed into their code."""
    probs: dict[str, float] = {}
    for label, prob in _identifier().rank(text):
        code = _LABEL_ALIASES.get(label, label)
        probs[code] = probs.get(code, 0.0) + float(prob)
    return probs


def detect_language(text: str) -> tuple[str, float]:
    """``(ISO 639-1 code, probability)`` of the most likely model label of ``text`` (e.g. ``yue`` gives ``zh``)."""
    label, prob = _identifier().classify(text)
    return _LABEL_ALIASES.get(label, label), float(prob)


# Spans are cut with str.find rather than lazy regexes: a regex retries every unclosed opener to the
# end of the text, which is quadratic on degenerate, repetitive completions.
def _drop_spans(text: str, opener: str, closer: str) -> str:
    out, pos = [], 0
    while True:
        start = text.find(opener, pos)
        if start == -1:
            break
        end = text.find(closer, start + len(opener))
        if end == -1:  # then no later opener is closed either
            break
        out.append(text[pos:start])
        out.append(" ")
        pos = end + len(closer)
    out.append(text[pos:])
    return "".join(out)


def _drop_environments(text: str) -> str:
    out, pos, unclosed = [], 0, set()
    for match in _BEGIN_RE.finditer(text):
        name = match.group(1)
        if match.start() < pos or name in unclosed:
            continue
        closer = "\\end{" + name + "}"
        end = text.find(closer, match.end())
        if end == -1:
            unclosed.add(name)
            continue
        out.append(text[pos:match.start()])
        out.append(" ")
        pos = end + len(closer)
    out.append(text[pos:])
    return "".join(out)


def _drop_boxed(text: str) -> str:
    # find_boxed returns the contents in order; the i-th opener match is where the i-th content starts.
    boxes, _ = find_boxed(text)
    out, pos = [], 0
    for box in boxes:
        match = BOXED_RE.search(text, pos)
        out.append(text[pos:match.start()])
        out.append(" ")
        pos = match.end() + len(box) + 1
    out.append(text[pos:])
    return "".join(out)


def strip_non_language(text: str) -> str:
    r"""``text`` without code, LaTeX (math, environments, ``\boxed{}``, commands), tags, digits and symbols:
    what is left is the prose that language ID should judge.
    """
    text = _CODE_BLOCK_RE.sub(" ", text)
    text = _INLINE_CODE_RE.sub(" ", text)
    text = _drop_environments(text)
    text = _DOLLAR_RE.sub(" ", text)
    text = _drop_spans(text, "\\[", "\\]")
    text = _drop_spans(text, "\\(", "\\)")
    text = _drop_boxed(text)  # boxed answers outside $...$ are math too
    text = _TAG_RE.sub(" ", text)
    text = _COMMAND_RE.sub(" ", text)
    # Keep letters and combining marks (Thai, Devanagari vowels); digits, punctuation and symbols go.
    text = "".join(ch if unicodedata.category(ch)[0] in "LM" else " " for ch in text)
    return _SPACES_RE.sub(" ", text).strip()


def split_thinking(completion: str, require_answer_tag: bool = False) -> tuple[str, str | None, str]:
    """``(thinking, answer or None, where the answer came from)``.

    Thinking is the text up to the first ``</think>`` (after a leading ``<think>`` if any), empty when
    there is no ``</think>``. The answer is the answer region of ``boxed_answer``.
    """
    answer, where = answer_region(completion, require_answer_tag)
    return thinking_text(completion), answer, where


def _validate(params: dict[str, Any]) -> None:
    min_chars = params.get("min_chars", 8)
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 0:
        raise ValueError("language_consistency: min_chars must be a non-negative integer")
    min_prob = params.get("min_prob", 0.1)
    if isinstance(min_prob, bool) or not isinstance(min_prob, (int, float)) or not 0.0 <= min_prob <= 1.0:
        raise ValueError("language_consistency: min_prob must be in [0, 1]")


@register_reward("language_consistency", validate=_validate)
def language_consistency(
    completion: str,
    sample: Sample,
    *,
    min_chars: int = 8,
    min_prob: float = 0.1,
    require_answer_tag: bool = False,
) -> RewardOutput:
    r"""1.0 when both the thinking (``<think>...</think>``) and the answer are in ``sample.field("language")``.

    The language is an ISO 639-1 code (``en``, ``zh``, ``ja``...; regional tags like ``zh-CN`` and a
    few 3-letter codes and English names are accepted). The answer is the region ``boxed_answer``
    reads (``<answer>`` block, else after ``</think>``); with no ``</think>`` the thinking is empty.
    Each part has code, LaTeX, ``\boxed{}``, commands, tags, digits and symbols removed first; a part
    with fewer than ``min_chars`` letters left counts as consistent (too little to judge). A part is
    consistent when the target is the identifier's most likely language or has probability >=
    ``min_prob``: short sentences are often split between their language and close relatives (ru/bg,
    pt/gl), while text in another language leaves the target almost nothing (on our test sentences in
    12 languages: at most 0.09 when wrong, at least 0.14 when right). Scores 0 when the sample has no
    usable language, the language is unknown to the identifier, or there is no answer region (e.g. an
    unterminated ``<think>``).
    """
    target = normalize_language(sample.field("language"))
    if target is None:
        return RewardOutput(0.0, {"reason": "sample has no 'language' field"})
    if target not in supported_languages():
        reason = f"language {target!r} is not supported by the identifier"
        return RewardOutput(0.0, {"language": target, "reason": reason})
    thinking, answer, where = split_thinking(completion, require_answer_tag)
    details: dict[str, Any] = {"language": target, "answer_region": where}
    if answer is None:
        details["reason"] = f"no answer part ({where})"
        return RewardOutput(0.0, details)
    mismatched = []
    for part, text in (("think", thinking), ("answer", answer)):
        prose = strip_non_language(text)
        letters = sum(ch.isalpha() for ch in prose)
        details[f"{part}_letters"] = letters
        if letters < min_chars:
            details[f"{part}_language"] = None
            continue
        detected, prob = detect_language(prose)
        details[f"{part}_language"] = detected
        if detected == target:
            details[f"{part}_target_prob"] = round(prob, 4)
            continue
        # Only a miss needs the full ranking (several times slower than the top label).
        target_prob = language_probabilities(prose).get(target, 0.0)
        details[f"{part}_target_prob"] = round(target_prob, 4)
        if target_prob < min_prob:
            mismatched.append(f"{part} is {detected!r}")
    if mismatched:
        details["reason"] = f"expected {target!r}: " + ", ".join(mismatched)
        return RewardOutput(0.0, details)
    details["reason"] = "consistent"
    return RewardOutput(1.0, details)
