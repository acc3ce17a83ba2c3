r"""data.answers: the one fraction parser both answer rewards read, thinking text, last box."""

from fractions import Fraction

import pytest

from data.answers import last_boxed, parse_number, simple_rational, split_fraction, thinking_text


@pytest.mark.parametrize("text, parts", [
    (r"\frac{3}{4}", (False, "3", "4")),
    (r"\frac12", (False, "1", "2")),
    (r"-\frac{-1}{2}", (True, "-1", "2")),
    ("3 / 4", (False, "3", "4")),
    (r"\frac{1.5}{2}", (False, "1.5", "2")),
    ("1,000/8", (False, "1,000", "8")),
    ("3/4/5", None),
    (r"\frac{x}{2}", None),
])
def test_split_fraction(text, parts):
    assert split_fraction(text) == parts


def test_exact_and_float_readings_of_one_fraction_agree():
    # simple_rational (boxed_answer) is exact over integers; parse_number (numeric) takes any number.
    assert simple_rational(r"-\frac{-1}{2}") == Fraction(1, 2) and parse_number(r"-\frac{-1}{2}") == 0.5
    assert simple_rational("7/8") == Fraction(7, 8) and parse_number("7/8") == 0.875
    assert simple_rational(r"\frac{1.5}{2}") is None and parse_number(r"\frac{1.5}{2}") == 0.75
    assert simple_rational("1,000/8") is None and parse_number("1,000/8") == 125.0
    assert simple_rational("1" * 51 + "/3") is None  # over 50 digits: left to math-verify
    assert simple_rational("2/0") is None and parse_number("2/0") is None


def test_thinking_text_and_last_boxed():
    assert thinking_text("<think>a+b</think><answer>x</answer>") == "a+b"
    assert thinking_text("a+b</think>x") == "a+b"
    assert thinking_text("<think>no close") == ""
    assert last_boxed(r"\boxed{1} then \boxed{ {2} }") == "{2}"
    assert last_boxed("none") is None
