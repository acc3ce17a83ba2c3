import pytest

from data.schema import Sample
from rewards import get_reward
from rewards.format import format_reward

S = Sample(prompt="")


def fmt(completion, **params):
    return format_reward(completion, S, **params)


@pytest.mark.parametrize("completion", [
    "<think>7+8=15</think><answer>15</answer>",
    "  <think>\nreason\n</think>\n\n<answer> 15 </answer>\n",
])
def test_think_answer_accepts(completion):
    assert fmt(completion).score == 1.0


@pytest.mark.parametrize("completion, reason", [
    ("<answer>15</answer>", "expected 1 <think>"),
    ("<think>a</think><answer>15</answer> trailing", "text after </answer>"),
    ("hi <think>a</think><answer>15</answer>", "text before <think>"),
    ("<think>a</think> so <answer>15</answer>", "text between"),
    ("<think>a</think><think>b</think><answer>15</answer>", "expected 1 <think>"),
    ("<think>a</think><answer>  </answer>", "empty answer"),
    ("<think>a<answer>15</answer></think>", "<answer> before </think>"),
    ("<think>a</think><answer>1</answer><answer>2</answer>", "expected 1 <answer>"),
])
def test_think_answer_rejects(completion, reason):
    out = fmt(completion)
    assert out.score == 0.0
    assert out.details["reason"].startswith(reason)


def test_min_think_chars_and_prompt_opened_think():
    assert fmt("<think>short</think><answer>1</answer>", min_think_chars=10).score == 0.0
    assert fmt("<think>long enough text</think><answer>1</answer>", min_think_chars=10).score == 1.0
    assert fmt("reasoning</think><answer>1</answer>", prompt_opens_think=True).score == 1.0
    assert fmt("<think>reasoning</think><answer>1</answer>", prompt_opens_think=True).score == 0.0


def test_r4b_modes():
    thinking = "<think>\nLet me see.\n</think>\n\nThe answer is 3."
    non_thinking = "<think>\n\n</think>\n\nThe answer is 3."
    assert fmt(thinking, mode="r4b_thinking").score == 1.0
    assert fmt(non_thinking, mode="r4b_thinking").score == 0.0
    assert fmt(non_thinking, mode="r4b_non_thinking").score == 1.0
    assert fmt(thinking, mode="r4b_non_thinking").score == 0.0
    assert fmt("<think>Let me see.</think>ok", mode="r4b_thinking").score == 0.0  # no newline after <think>
    assert fmt("<think>\n\n</think>", mode="r4b_non_thinking").score == 0.0  # nothing after thinking
    assert fmt(" <think>\n\n</think>\n\nx", mode="r4b_non_thinking").score == 0.0


def test_bad_mode_is_a_config_error():
    with pytest.raises(ValueError, match="unknown mode"):
        get_reward("format").check_params({"mode": "thinking"})
    with pytest.raises(ValueError):
        fmt("<think>a</think><answer>1</answer>", mode="nope")


def test_boxed_mode_checks_the_box_not_its_content():
    assert fmt("The sum is \\boxed{7}.", mode="boxed").score == 1.0
    assert fmt("The sum is \\boxed{wrong}.", mode="boxed").score == 1.0  # the box, not what it holds
    assert fmt("The sum is 7.", mode="boxed").details["reason"] == "no \\boxed answer"
    assert fmt("The sum is \\boxed{7", mode="boxed").score == 0.0
    assert fmt("The sum is \\boxed{}", mode="boxed").score == 0.0
    assert fmt("<think>\\boxed{7}", mode="boxed").score == 0.0  # a thought never closed holds no answer


def test_boxed_mode_wants_one_final_box():
    assert fmt("So 3 + 4 = \\boxed{7}.", mode="boxed").score == 1.0
    assert fmt("So 3 + 4 = $\\boxed{7}$", mode="boxed").score == 1.0
    assert fmt("\\boxed{7} is it", mode="boxed").details["reason"] == "text after the box"
    assert fmt("\\boxed{7} 7", mode="boxed").details["reason"] == "text after the box"
    assert fmt("\\boxed{3} + \\boxed{4} = \\boxed{7}", mode="boxed").details["reason"] == "3 boxes"
    assert fmt("<think>\\boxed{1}</think>The sum is \\boxed{7}.", mode="boxed").score == 1.0  # thoughts aside
