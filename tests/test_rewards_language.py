import time

import pytest

from data.schema import Sample
from rewards import get_reward
from data.language_codes import normalize_language
from rewards.language import language_consistency, strip_non_language

# Thinking and answer sentences per language, each long enough to be judged.
TEXT = {
    "en": ("First we compute the sum of the two numbers, then divide it by three.", "Therefore the answer is $\\boxed{12}$."),
    "zh": ("我们先计算两个数的和，然后再除以三，得到最后的结果。", "因此，最终的答案是 $\\boxed{12}$。"),
    "ja": ("まず、二つの数の和を計算して、それを三で割ります。", "よって、最終的な答えは $\\boxed{12}$ です。"),
    "fr": ("D'abord, calculons la somme des deux nombres, puis divisons-la par trois.", "Donc la réponse finale est $\\boxed{12}$."),
    "de": ("Zuerst berechnen wir die Summe der beiden Zahlen und teilen sie durch drei.", "Die endgültige Antwort ist daher $\\boxed{12}$."),
    "es": ("Primero calculamos la suma de los dos números y luego la dividimos entre tres.", "Por lo tanto, la respuesta final es $\\boxed{12}$."),
    "ru": ("Сначала вычислим сумму двух чисел, а затем разделим её на три.", "Итак, окончательный ответ равен $\\boxed{12}$."),
    "ko": ("먼저 두 수의 합을 계산한 다음 그것을 셋으로 나눕니다.", "그러므로 최종 답은 $\\boxed{12}$입니다."),
    "th": ("ก่อนอื่นเราคำนวณผลรวมของสองจำนวน แล้วหารด้วยสาม", "ดังนั้นคำตอบสุดท้ายคือ $\\boxed{12}$"),
    "ar": ("أولاً نحسب مجموع العددين ثم نقسمه على ثلاثة.", "لذا فإن الإجابة النهائية هي $\\boxed{12}$."),
}


def lc(completion, language="en", **params):
    metadata = {} if language is None else {"language": language}
    return language_consistency(completion, Sample(prompt="", metadata=metadata), **params)


def wrap(think, answer):
    return f"<think>{think}</think><answer>{answer}</answer>"


@pytest.mark.parametrize("lang", sorted(TEXT))
def test_consistent_in_each_language(lang):
    out = lc(wrap(*TEXT[lang]), lang)
    assert out.score == 1.0, out.details
    assert out.details["think_language"] == lang


@pytest.mark.parametrize("lang", ["ja", "fr", "th"])
def test_thinking_in_english_fails(lang):
    out = lc(wrap(TEXT["en"][0], TEXT[lang][1]), lang)
    assert out.score == 0.0
    assert out.details["think_language"] == "en"
    assert out.details["answer_language"] == lang
    assert "think is 'en'" in out.details["reason"]


def test_answer_in_other_language_fails():
    out = lc(wrap(TEXT["zh"][0], TEXT["en"][1]), "zh")
    assert out.score == 0.0
    assert out.details["answer_language"] == "en"


def test_math_and_code_do_not_count():
    # Only formulas and code in the answer: nothing left to judge, so the Chinese thinking decides.
    answer = r"$$x^2 + 3x = \frac{1}{2}$$ \(\alpha\) \boxed{\sqrt{2}} ```python\nprint('hello world')\n``` `len(xs)` 42"
    out = lc(wrap(TEXT["zh"][0], answer), "zh")
    assert out.score == 1.0, out.details
    assert out.details["answer_letters"] == 0


def test_strip_non_language():
    text = r"Let $x = 3$ so \[y = x^2\] and \boxed{\frac{9}{1}} \textbf{done} <b> 42 + 7 </b>"
    assert strip_non_language(text) == "Let so and done"


def test_short_remainder_passes():
    # "Answer" has 6 letters: under min_chars=8 it is not judged, even though it is English.
    out = lc(wrap(TEXT["ja"][0], r"Answer: \boxed{12}"), "ja")
    assert out.score == 1.0
    assert out.details["answer_language"] is None
    assert lc(wrap(TEXT["ja"][0], "Final answer here"), "ja", min_chars=8).score == 0.0
    assert lc(wrap(TEXT["ja"][0], "Final answer here"), "ja", min_chars=100).score == 1.0


def test_close_relatives_get_the_benefit_of_the_doubt():
    # A short Russian sentence the model ranks Bulgarian first (ru 0.14): kept, as ru clears min_prob.
    russian = "Сначала сложим два числа, а затем разделим на три."
    out = lc(wrap(russian, TEXT["ru"][1]), "ru")
    assert out.score == 1.0 and out.details["think_language"] != "ru"
    assert 0.1 <= out.details["think_target_prob"] < 0.5
    assert lc(wrap(russian, TEXT["ru"][1]), "ru", min_prob=0.5).score == 0.0
    # Russian is not Ukrainian, though.
    assert lc(wrap(*TEXT["ru"]), "uk").score == 0.0


def test_regional_and_named_codes():
    assert normalize_language("zh-CN") == "zh"
    assert normalize_language("ZH_Hans") == "zh"
    assert normalize_language("Japanese") == "ja"
    assert normalize_language("deu") == "de"
    assert normalize_language(None) is None
    assert lc(wrap(*TEXT["zh"]), "zh-TW").score == 1.0


def test_missing_or_unknown_language_scores_zero():
    out = lc(wrap(*TEXT["en"]), None)
    assert out.score == 0.0 and "no 'language'" in out.details["reason"]
    out = lc(wrap(*TEXT["en"]), "xx")
    assert out.score == 0.0 and "not supported" in out.details["reason"]


def test_parts_without_tags():
    # No think tags: thinking is empty and the whole completion is the answer.
    assert lc("Zuerst berechnen wir die Summe, also ist die Antwort 12.", "de").score == 1.0
    # Prompt opened <think>: the completion starts inside it.
    assert lc(TEXT["fr"][0] + "</think>" + TEXT["fr"][1], "fr").score == 1.0
    # Thinking cut off: no answer part.
    out = lc("<think>" + TEXT["en"][0], "en")
    assert out.score == 0.0 and "unterminated" in out.details["reason"]


def test_answer_is_read_from_answer_tag_not_thinking():
    completion = "<think>" + TEXT["ko"][0] + "</think>\n<answer>" + TEXT["en"][1] + "</answer>"
    out = lc(completion, "ko")
    assert out.details["think_language"] == "ko" and out.details["answer_language"] == "en"


def test_registered_and_validated():
    spec = get_reward("language_consistency")
    assert spec.params == {"min_chars": 8, "min_prob": 0.1, "require_answer_tag": False}
    with pytest.raises(ValueError):
        spec.check_params({"min_chars": -1})
    with pytest.raises(ValueError):
        spec.check_params({"min_prob": 2})


def test_degenerate_completion_is_fast():
    # Unclosed openers repeated many times: regex-based stripping would be quadratic here.
    junk = r"\[ \( \begin{align} \boxed{ $$ " * 4000
    start = time.perf_counter()
    out = lc(wrap(junk + TEXT["en"][0], TEXT["en"][1]), "en")
    assert time.perf_counter() - start < 2.0
    assert out.details["think_letters"] > 0
