import time

import pytest

from data.schema import Sample
from data.answers import find_boxed
from rewards.math_answer import boxed_answer, explosive_reason


def score(completion, gold, **params):
    return boxed_answer(completion, Sample(prompt="", ground_truth=gold), **params)


def test_correct_and_wrong():
    assert score(r"so the total is \boxed{85}", "85").score == 1.0
    assert score(r"so the total is \boxed{86}", "85").score == 0.0
    assert score(r"\boxed{85}", 85).score == 1.0  # numeric gold
    assert score(r"\boxed{1,000}", "1000").score == 1.0
    assert score(r"\boxed{0.50}", "0.5").details["reason"] == "numeric match"


def test_equivalent_latex_forms():
    out = score(r"\boxed{\frac{1}{2}}", "0.5")
    assert out.score == 1.0 and out.details["extracted"] == r"\frac{1}{2}"
    assert score(r"\boxed{\dfrac12}", "0.5").score == 1.0
    assert score(r"\boxed{3\sqrt{2}}", r"\sqrt{18}").score == 1.0
    assert score(r"\boxed{\frac{\pi}{2}}", r"\pi/2").score == 1.0
    assert score(r"\boxed{\text{Yes}}", "yes").score == 1.0
    assert score(r"\boxed{\frac{1}{3}}", "0.5").score == 0.0


def test_list_and_boxed_gold():
    assert score(r"\boxed{4}", ["2", "4"]).score == 1.0
    assert score(r"\boxed{4}", r"$\boxed{4}$").score == 1.0
    assert score(r"\boxed{4}", None).details["reason"] == "sample has no usable ground_truth"


def test_last_box_counts_and_hedging_is_an_option():
    # A self-correction is graded by its last box (verl's and math-verify's convention).
    fixed = score(r"So \boxed{4}. Wait, 1 + 2 is \boxed{3}", "3")
    assert fixed.score == 1.0 and fixed.details["extracted"] == "3"
    assert score(r"So \boxed{3}. Wait, no: \boxed{4}", "3").score == 0.0
    out = score(r"It is \boxed{3} or \boxed{4}", "4", reject_hedging=True)
    assert out.score == 0.0 and out.details["reason"].startswith("hedged")
    # Repeating the same answer is not hedging.
    assert score(r"\boxed{3}. Final: \boxed{ 3 }", "3", reject_hedging=True).score == 1.0


def test_code_in_answer_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    out = score(r"\boxed{__import__('os').system('touch " + str(marker) + r"')}", "0")
    assert out.score == 0.0
    assert not marker.exists()


@pytest.mark.parametrize("tower", [r"9^{9^{9^{9}}}", "9^9^9^9", "9**9**9**9", r"9^{999999999}", "1000000!"])
def test_power_towers_are_refused_quickly(tower):
    start = time.monotonic()
    out = score(r"\boxed{" + tower + "}", "5")
    assert out.score == 0.0
    assert "unsafe" in out.details["reason"]
    assert time.monotonic() - start < 1.0


def test_explosive_reason():
    assert explosive_reason(r"2^{2023}") is None
    assert explosive_reason(r"x^{2n+1}") is None
    assert explosive_reason("5!") is None
    assert explosive_reason(r"9^{9^{9}}") == "power tower"
    assert explosive_reason(r"(10^{3})!") is not None


def test_long_completion_and_long_answer():
    start = time.monotonic()
    assert score("x" * 100_000 + r" \boxed{42}", "42").score == 1.0
    out = score(r"\boxed{" + "1" * 100_000 + "}", "1")
    assert out.score == 0.0 and "longer than" in out.details["reason"]
    assert score(r"\boxed{" * 50_000, "1").details["reason"] == "unclosed \\boxed"
    assert time.monotonic() - start < 2.0


def test_unclosed_empty_and_missing_box():
    assert score(r"answer \boxed{12", "12").details["reason"] == "unclosed \\boxed"
    assert score(r"answer \boxed{}", "12").details["reason"] == "empty \\boxed"
    out = score("the answer is 12", "12")  # unboxed text never counts
    assert out.score == 0.0 and out.details["reason"] == "no \\boxed answer"


def test_answer_tag_beats_think():
    completion = r"<think>maybe \boxed{3}</think><answer>\boxed{4}</answer>"
    assert score(completion, "4").score == 1.0
    assert score(completion, "3").score == 0.0
    # Without an answer tag only the text after </think> counts.
    assert score(r"<think>\boxed{3}</think> so \boxed{4}", "4").score == 1.0
    assert score(r"<think>thinking \boxed{4} and cut off", "4").details["reason"] == "unterminated <think>"


def test_require_answer_tag():
    assert score(r"\boxed{4}", "4", require_answer_tag=True).details["reason"] == "no <answer> tag"
    assert score(r"<answer>\boxed{4}</answer>", "4", require_answer_tag=True).score == 1.0


def test_find_boxed_nesting_and_escapes():
    assert find_boxed(r"\boxed{\frac{1}{2}} and \boxed{\{1,2\}}") == ([r"\frac{1}{2}", r"\{1,2\}"], False)
    assert find_boxed(r"\boxed{\boxed{3}}") == ([r"\boxed{3}"], False)
    assert find_boxed(r"\boxed{1} \boxed{2") == (["1"], True)


def test_rational_fast_path_agrees_with_math_verify():
    from data.answers import simple_rational

    assert simple_rational(r"-\frac{3}{4}") == simple_rational("-3/4") == simple_rational("-0.75")
    assert simple_rational(r"\frac{1}{0}") is None
    assert score(r"\boxed{\frac{2}{4}}", r"\frac12").details["reason"] == "rational match"
    assert score(r"\boxed{\frac{2}{5}}", r"\frac12").details["reason"] == "rational mismatch"
    # Decimal vs fraction mismatches go to math-verify (its rounding tolerance applies).
    assert score(r"\boxed{0.333333}", r"\frac13").score == 1.0


def test_prose_answers_skip_the_latex_parser():
    from data.answers import looks_like_text

    assert looks_like_text("all real numbers") and looks_like_text("__import__('os')")
    assert not looks_like_text(r"\sin x + \cos x") and not looks_like_text(r"12\text{ meters}")
    start = time.monotonic()
    out = score(r"\boxed{the answer is probably something like forty two}", "42")
    assert out.score == 0.0 and out.details["reason"] == "text mismatch"
    assert score(r"\boxed{\text{All Real Numbers}}", "all real numbers").score == 1.0
    assert time.monotonic() - start < 0.2
    assert score(r"\boxed{12\text{ meters}}", "12").score == 1.0
    assert score(r"\boxed{30^\circ}", "30").score == 1.0
