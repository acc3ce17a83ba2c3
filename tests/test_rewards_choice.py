import pytest

from data.schema import Sample
from rewards.choice import multiple_choice

CHOICES = ["Paris", "London", "Rome", "Berlin"]


def mc(completion, gold, choices=None, **params):
    metadata = {} if choices is None else {"choices": choices}
    return multiple_choice(completion, Sample(prompt="", ground_truth=gold, metadata=metadata), **params)


@pytest.mark.parametrize("completion", [
    r"The capital is \boxed{C}",
    r"\boxed{(C)}",
    r"\boxed{\text{C}}",
    "<think>A? no.</think><answer>C</answer>",
    "Reasoning...\nAnswer: C",
    "So the answer is **(C) Rome**.",
    "C",
])
def test_correct_letter_forms(completion):
    out = mc(completion, "C", CHOICES)
    assert out.score == 1.0, out.details


def test_wrong_letter():
    assert mc(r"\boxed{B}", "C", CHOICES).score == 0.0


def test_option_text_and_labelled_choices():
    assert mc(r"\boxed{Rome}", "C", CHOICES).score == 1.0
    assert mc(r"\boxed{rome}", "C", ["A. Paris", "B. London", "C. Rome", "D. Berlin"]).score == 1.0
    assert mc(r"\boxed{C}", "Rome", CHOICES).score == 1.0  # gold given as option text
    assert mc(r"\boxed{Rome}", "Rome").score == 1.0  # no options: texts compared
    assert mc(r"\boxed{C}", "C", {"A": "x", "B": "y", "C": "z"}).score == 1.0


def test_hedging_scores_zero():
    out = mc(r"\boxed{A or C}", "C", CHOICES)
    assert out.score == 0.0 and out.details["reason"].startswith("hedged")
    assert mc(r"\boxed{A} \boxed{C}", "C", CHOICES).score == 1.0  # the last box counts
    assert mc(r"\boxed{A} \boxed{C}", "C", CHOICES, reject_hedging=True).score == 0.0
    assert mc("Answer: A, C", "C", CHOICES).score == 0.0


def test_no_answer_and_letters_beyond_options():
    assert mc("I am not sure about this long question at all, sorry.", "C", CHOICES).score == 0.0
    assert mc(r"\boxed{E}", "C", CHOICES).score == 0.0  # only four options
    assert mc(r"\boxed{C", "C", CHOICES).details["reason"] == "unclosed \\boxed"
    assert mc("Answer: C", "C", CHOICES, require_answer_tag=True).score == 0.0
