import math

import pytest

from data.schema import Sample
from data.answers import parse_number
from rewards.numeric import numeric


def num(completion, gold, **params):
    return numeric(completion, Sample(prompt="", ground_truth=gold), **params)


def test_exact_and_partial_credit():
    assert num(r"\boxed{100}", 100).score == 1.0
    assert num(r"\boxed{90}", "100").score == pytest.approx(math.exp(-0.1))
    assert num(r"\boxed{90}", "100", k=5.0).score == pytest.approx(math.exp(-0.5))
    assert num(r"<answer>-2.5</answer>", "-2").score == pytest.approx(math.exp(-0.25))
    assert num(r"\boxed{\frac{1}{2}}", "0.5").score == 1.0
    assert num(r"\boxed{1.5\times10^{3}}", "1500").score == 1.0
    assert num(r"\boxed{12 \text{ cm}}", "12").score == 1.0


def test_zero_gold_uses_rel_eps():
    assert num(r"\boxed{0}", 0).score == 1.0
    assert num(r"\boxed{0.001}", 0).score == pytest.approx(0.0)
    assert num(r"\boxed{0.001}", 0, rel_eps=1.0).score == pytest.approx(math.exp(-0.001))


def test_failures_score_zero():
    assert num(r"\boxed{3} or \boxed{4}", "3", reject_hedging=True).score == 0.0
    assert num(r"\boxed{4} or \boxed{3}", "3").score == 1.0  # the last box counts
    assert num(r"\boxed{x+1}", "3").details["reason"] == "answer is not a single number"
    assert num("the answer is 3", "3").score == 0.0
    assert num(r"\boxed{3}", "three").details["reason"] == "ground_truth is not a number"
    assert num(r"\boxed{1e999}", "3").score == 0.0
    assert num(r"\boxed{9^{9^{9^{9}}}}", "3").score == 0.0
    assert num(r"\boxed{__import__('os')}", "3").score == 0.0


def test_parse_number():
    assert parse_number("-1,234.5") == -1234.5
    assert parse_number(r"\dfrac{3}{4}") == 0.75
    assert parse_number("3/4") == 0.75
    assert parse_number("50\\%") == 50.0
    assert parse_number("1/0") is None
    assert parse_number("1 and 2") is None


def test_units_and_currency():
    assert parse_number("12 cm") == 12.0
    assert parse_number(r"\$12") == 12.0
    assert parse_number("2x") is None
    assert parse_number("3 + x") is None
    assert parse_number("9.8 m/s^2") == 9.8
