r"""Adversarial matrix: every rule-based reward, scored through a real ``RewardExecutor``.

For each reward: a correct and a wrong completion, then hedged answers, code in the answer, power towers,
100,000-character completions (long text, 100k nested brackets) and malformed answers. Each expected
score is decided by hand from the reward's documented rules (its docstring). Every case must be handled
by the reward itself: no error, no timeout, well under the executor's time limit, and code in a
completion is never run (its marker file must not appear).
"""

from __future__ import annotations

import math
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from data.schema import Sample
from rewards import RewardExecutor

TIMEOUT_S = 2.0
N = 100_000  # characters in the long completions

_RUN = uuid.uuid4().hex[:12]  # lower-case hex: no stray option letter for multiple_choice
_MARKERS: list[Path] = []


def marker(tag: str) -> str:
    """A file path that code in a completion would create if anything ran it."""
    path = Path(tempfile.gettempdir()) / f"pwned_{_RUN}_{tag}"
    _MARKERS.append(path)
    return str(path)


def touch(tag: str) -> str:
    """Python that would create the marker file ``tag`` if it were ever evaluated."""
    return f"__import__('os').system('touch {marker(tag)}')"


CHOICES = ["Paris", "London", "Rome", "Berlin"]
SAMPLES = {
    "boxed_answer": Sample(prompt="What is 1 + 2?", ground_truth="3"),
    "multiple_choice": Sample(prompt="The capital of Italy?", ground_truth="C", metadata={"choices": CHOICES}),
    "numeric": Sample(prompt="How many?", ground_truth="100"),
    "format": Sample(prompt="What is 1 + 2?"),
    "language_consistency": Sample(prompt="What is 1 + 2?", metadata={"language": "en"}),
    "spatial_iou": Sample(prompt="Where is the cat?", ground_truth=[0, 0, 10, 10]),
}

THINK_EN = "First we compute the sum of the two numbers, then divide it by three."
ANSWER_EN = "Therefore the answer is $\\boxed{12}$."
THINK_ZH = "我们先计算两个数的和，然后再除以三，得到最后的结果。"


@dataclass
class Case:
    reward: str
    id: str
    completion: str
    score: float
    reason: str | None = None  # a fragment of details["reason"], where it shows which rule decided
    params: dict = field(default_factory=dict)


def _boxed_cases() -> list[Case]:
    r = "boxed_answer"
    return [
        Case(r, "correct", r"<think>1 + 2 = 3</think><answer>\boxed{3}</answer>", 1.0),
        Case(r, "correct_latex", r"\boxed{\sqrt{9}}", 1.0, "equivalent"),
        Case(r, "correct_in_brackets", r"\boxed{((3))}", 1.0, "equivalent"),
        Case(r, "wrong", r"\boxed{4}", 0.0, "mismatch"),
        Case(r, "box_in_think_ignored", r"<think>\boxed{4}?</think><answer>\boxed{3}</answer>", 1.0),
        # Several boxes: the last counts (a self-correction); with reject_hedging, different boxes score 0
        # and the same answer twice does not.
        Case(r, "last_box_wrong", r"\boxed{3} or \boxed{4}", 0.0, "mismatch"),
        Case(r, "last_box_correct", r"\boxed{4}. Wait, no: \boxed{3}", 1.0, "exact match"),
        Case(r, "hedged", r"\boxed{3} or \boxed{4}", 0.0, "hedged", params={"reject_hedging": True}),
        Case(r, "hedged_correct_last", r"\boxed{4} or \boxed{3}", 0.0, "hedged", params={"reject_hedging": True}),
        Case(r, "repeated_same_answer_hedging_on", r"\boxed{3}. Final: \boxed{ 3 }", 1.0, params={"reject_hedging": True}),
        Case(r, "hedged_in_one_box", r"\boxed{3 \text{ or } 4}", 0.0),
        Case(r, "repeated_same_answer", r"\boxed{3}. Final: \boxed{ 3 }", 1.0),
        # Code in the answer: compared as text, never run.
        Case(r, "code_import", r"\boxed{" + touch("boxed_import") + "}", 0.0, "text mismatch"),
        Case(r, "code_exec", r"\boxed{exec(\"import os; os.system('touch " + marker("boxed_exec") + "')\")}", 0.0),
        Case(r, "code_in_answer_tag", "<answer>\\boxed{" + touch("boxed_tag") + "}</answer>", 0.0),
        # Power towers and other answers whose evaluation explodes.
        Case(r, "tower_caret", r"\boxed{9^9^9^9}", 0.0, "unsafe answer (chained powers)"),
        Case(r, "tower_python", r"\boxed{9**9**9**9}", 0.0, "unsafe answer (python-style power)"),
        Case(r, "tower_braced", r"\boxed{9^{9^{9^{9}}}}", 0.0, "unsafe answer (power tower)"),
        Case(r, "huge_exponent", r"\boxed{9^{999999999}}", 0.0, "unsafe answer (exponent too large)"),
        Case(r, "huge_base_power", r"\boxed{" + "9" * 40 + "^{99999}}", 0.0, "unsafe answer (power too large)"),
        Case(r, "ratio_of_huge_powers", r"\boxed{\frac{9^{99999}}{8^{99999}}}", 0.0, "unsafe answer (power too large)"),
        Case(r, "factorial_of_power", r"\boxed{9^9!}", 0.0, "unsafe answer (factorial too large)"),
        Case(r, "repeated_factorial", r"\boxed{9!!!}", 0.0, "unsafe answer (repeated factorial)"),
        Case(r, "gamma_of_power", r"\boxed{\Gamma(9^{9})}", 0.0, "unsafe answer (large combinatorial"),
        Case(r, "product_of_powers", r"\boxed{\prod_{k=1}^{9999} k^{9999}}", 0.0, "unsafe answer (large combinatorial"),
        # 100,000 characters.
        Case(r, "long_text_then_answer", "x" * N + r" \boxed{3}", 1.0),
        Case(r, "long_reasoning_then_answer", "Let me double-check. " * (N // 21) + r"so it is \boxed{3}", 1.0),
        Case(r, "long_answer", r"\boxed{" + "1" * N + "}", 0.0, "longer than 1000"),
        Case(r, "100k_nested_braces_in_box", r"\boxed{" + "{" * N + "3" + "}" * N + "}", 0.0, "longer than 1000"),
        Case(r, "100k_open_braces_in_box", r"\boxed{" + "{" * N, 0.0, "unclosed"),
        Case(r, "100k_braces_before_box", "{" * N + r"\boxed{3}", 1.0),
        Case(r, "100k_brackets_before_box", "[" * N + r"\boxed{3}", 1.0),
        Case(r, "50k_boxed_openers", r"\boxed{" * (N // 2), 0.0, "unclosed"),
        # Short answers that the LaTeX parser would need seconds (or minutes) for.
        Case(r, "deeply_nested_braces", r"\boxed{" + "{" * 30 + "3" + "}" * 30 + "}", 0.0, "brackets nested too deep"),
        Case(r, "deeply_nested_parens", r"\boxed{" + "(" * 100 + "3" + ")" * 100 + "}", 0.0, "brackets nested too deep"),
        Case(r, "long_bracketed_sum", r"\boxed{(" + "x+" * 150 + "x)}", 0.0, "bracketed expression too long"),
        Case(r, "sign_chain", r"\boxed{" + "-" * 900 + "3}", 0.0, "too many tokens"),
        # Malformed.
        Case(r, "unclosed_box", r"the answer is \boxed{3", 0.0, "unclosed"),
        Case(r, "empty_box", r"the answer is \boxed{}", 0.0, "empty"),
        Case(r, "no_box", "the answer is 3", 0.0, "no \\boxed"),
        Case(r, "answer_only_in_think", r"<think>so it is \boxed{3}</think>", 0.0, "no \\boxed"),
        Case(r, "answer_in_unclosed_think", r"<think>so it is \boxed{3}", 0.0, "unterminated <think>"),
    ]


def _choice_cases() -> list[Case]:
    r = "multiple_choice"
    return [
        Case(r, "correct", r"The capital of Italy is Rome, so \boxed{C}", 1.0),
        Case(r, "correct_option_text", r"\boxed{Rome}", 1.0, "option text"),
        Case(r, "correct_answer_line", "Rome it is.\nAnswer: (C)", 1.0),
        Case(r, "wrong", r"\boxed{B}", 0.0, "mismatch"),
        # Hedging: two different options score 0.
        Case(r, "hedged_answer_line", "Answer: A or C", 0.0, "hedged"),
        Case(r, "hedged_in_box", r"\boxed{A or C}", 0.0, "hedged"),
        Case(r, "last_of_two_boxes", r"\boxed{A} or \boxed{C}", 1.0),
        Case(r, "hedged_two_boxes", r"\boxed{A} or \boxed{C}", 0.0, "hedged", params={"reject_hedging": True}),
        Case(r, "hedged_list", "Answer: A, C", 0.0, "hedged"),
        # Code in the answer.
        Case(r, "code_in_box", r"\boxed{" + touch("choice_box") + "}", 0.0, "no option letter"),
        Case(r, "code_answer_line", "Answer: " + touch("choice_line"), 0.0, "no option letter"),
        Case(r, "code_answer_tag", "<answer>" + touch("choice_tag") + "</answer>", 0.0, "no option letter"),
        # Power towers.
        Case(r, "tower_caret", r"\boxed{9^9^9^9}", 0.0, "no option letter"),
        Case(r, "tower_python", "Answer: 9**9**9**9", 0.0, "no option letter"),
        # 100,000 characters.
        Case(r, "long_text_then_answer", "x" * N + "\nAnswer: C", 1.0),
        Case(r, "long_reasoning_then_answer", "Let me check each option. " * (N // 25) + "\nAnswer: C", 1.0),
        Case(r, "long_answer_tag", "<answer>" + "C " * (N // 2) + "</answer>", 0.0, "too long"),
        Case(r, "100k_braces_then_answer", "{" * N + "\nAnswer: C", 1.0),
        Case(r, "100k_brackets_only", "[" * N, 0.0, "no final answer"),
        Case(r, "100k_open_braces_in_box", r"\boxed{" + "{" * N, 0.0, "unclosed"),
        # Malformed.
        Case(r, "unclosed_box", r"\boxed{C", 0.0, "unclosed"),
        Case(r, "empty_box", r"\boxed{}", 0.0, "empty"),
        Case(r, "answer_only_in_think", "<think>Answer: C</think>", 0.0, "empty"),
        Case(r, "answer_in_unclosed_think", "<think>Answer: C", 0.0, "unterminated <think>"),
    ]


def _numeric_cases() -> list[Case]:
    r = "numeric"
    return [
        Case(r, "correct", r"<think>10 * 10</think><answer>\boxed{100}</answer>", 1.0),
        Case(r, "correct_with_unit", r"\boxed{100 \text{ cm}}", 1.0),
        # exp(-k * |pred - gold| / |gold|).
        Case(r, "off_by_10_percent", r"\boxed{90}", math.exp(-0.1)),
        Case(r, "off_by_half", "<answer>50</answer>", math.exp(-0.5)),
        Case(r, "off_by_10_percent_k2", r"\boxed{110}", math.exp(-0.2), params={"k": 2.0}),
        Case(r, "wrong", r"\boxed{-100}", math.exp(-2.0)),
        # Hedging: two numbers score 0.
        Case(r, "last_of_two_boxes", r"\boxed{90} or \boxed{100}", 1.0),
        Case(r, "hedged_two_boxes", r"\boxed{90} or \boxed{100}", 0.0, "hedged", params={"reject_hedging": True}),
        Case(r, "hedged_in_box", r"\boxed{90 or 100}", 0.0, "not a single number"),
        Case(r, "hedged_list", "<answer>100, 90</answer>", 0.0, "not a single number"),
        Case(r, "hedged_number_word", r"\boxed{100 or ninety}", 0.0, "not a single number"),
        # Code in the answer.
        Case(r, "code_in_box", r"\boxed{" + touch("numeric_box") + "}", 0.0, "not a single number"),
        Case(r, "code_answer_tag", "<answer>" + touch("numeric_tag") + "</answer>", 0.0, "not a single number"),
        # Power towers and overflowing numbers.
        Case(r, "tower_caret", r"\boxed{9^9^9^9}", 0.0, "not a single number"),
        Case(r, "tower_python", r"\boxed{9**9**9**9}", 0.0, "not a single number"),
        Case(r, "tower_python_answer_tag", "<answer>9**9**9**9</answer>", 0.0, "not a single number"),
        Case(r, "overflowing_scientific", r"\boxed{1\times10^{999}}", 0.0, "not a single number"),
        Case(r, "infinite_float", r"\boxed{1e999}", 0.0, "not a single number"),
        # 100,000 characters.
        Case(r, "long_text_then_answer", "x" * N + r"\boxed{100}", 1.0),
        Case(r, "long_answer", "<answer>" + "1" * N + "</answer>", 0.0, "too long"),
        Case(r, "100k_nested_braces_in_box", r"\boxed{" + "{" * N + "}" * N + "}", 0.0, "too long"),
        Case(r, "100k_braces_before_box", "{" * N + r"\boxed{100}", 1.0),
        Case(r, "100k_open_braces_in_box", r"\boxed{" + "{" * N, 0.0, "unclosed"),
        # Malformed.
        Case(r, "unclosed_box", r"\boxed{100", 0.0, "unclosed"),
        Case(r, "empty_box", r"\boxed{}", 0.0, "not a single number"),
        Case(r, "no_box", "the answer is 100", 0.0, "no \\boxed"),
        Case(r, "answer_only_in_think", r"<think>\boxed{100}</think>", 0.0, "no \\boxed"),
        Case(r, "answer_in_unclosed_think", r"<think>\boxed{100}", 0.0, "unterminated <think>"),
    ]


def _format_cases() -> list[Case]:
    # ``format`` checks the layout only: what the answer says (code, towers) does not matter.
    r = "format"
    return [
        Case(r, "correct", "<think>1 + 2 = 3</think><answer>3</answer>", 1.0, "ok"),
        Case(r, "wrong_no_think", "<answer>3</answer>", 0.0, "expected 1 <think>"),
        Case(r, "wrong_plain", "The answer is 3.", 0.0, "expected 1 <think>"),
        Case(r, "hedged_two_answers", "<think>a</think><answer>3</answer><answer>4</answer>", 0.0, "expected 1 <answer>"),
        Case(r, "hedged_in_one_answer", "<think>a</think><answer>3 or 4</answer>", 1.0, "ok"),
        Case(r, "code_in_answer", "<think>run it</think><answer>" + touch("format_tag") + "</answer>", 1.0, "ok"),
        Case(r, "code_only", touch("format_plain"), 0.0, "expected 1 <think>"),
        Case(r, "tower_caret", "<think>big</think><answer>9^9^9^9</answer>", 1.0, "ok"),
        Case(r, "tower_python", "<think>big</think><answer>9**9**9**9</answer>", 1.0, "ok"),
        Case(r, "long_think", "<think>" + "step. " * (N // 6) + "</think><answer>3</answer>", 1.0, "ok"),
        Case(r, "100k_think_tags", "<think>" * N, 0.0, "expected 1 <think>"),
        Case(r, "100k_braces_in_answer", "<think>a</think><answer>" + "{" * N + "</answer>", 1.0, "ok"),
        Case(r, "100k_braces_only", "{" * N, 0.0, "expected 1 <think>"),
        Case(r, "unclosed_answer", "<think>a</think><answer>3", 0.0, "expected 1 </answer>"),
        Case(r, "empty_answer", "<think>a</think><answer> </answer>", 0.0, "empty answer"),
        Case(r, "unclosed_box_in_answer", "<think>a</think><answer>\\boxed{3</answer>", 1.0, "ok"),
        Case(r, "answer_only_in_think", "<think>the answer is 3</think>", 0.0, "expected 1 <answer>"),
        Case(r, "answer_in_unclosed_think", "<think>the answer is 3", 0.0, "expected 1 </think>"),
    ]


def _language_cases() -> list[Case]:
    # Code, LaTeX, \boxed{} and symbols are removed before language ID; fewer than 8 letters left
    # counts as consistent.
    r = "language_consistency"

    def wrap(think: str, answer: str) -> str:
        return f"<think>{think}</think><answer>{answer}</answer>"

    return [
        Case(r, "correct", wrap(THINK_EN, ANSWER_EN), 1.0, "consistent"),
        Case(r, "wrong_thinking_language", wrap(THINK_ZH, ANSWER_EN), 0.0, "think is 'zh'"),
        Case(r, "code_block", wrap(THINK_EN, "```python\n" + touch("lang_block") + "\n```"), 1.0, "consistent"),
        Case(r, "code_inline", wrap(THINK_EN, "Run `" + touch("lang_inline") + "` now."), 1.0, "consistent"),
        Case(r, "code_in_box", wrap(THINK_EN, "Therefore the answer is $\\boxed{" + touch("lang_box") + "}$."),
             1.0, "consistent"),
        Case(r, "tower", wrap(THINK_EN, "Therefore the answer is $9^{9^{9^{9}}}$, not `9**9**9**9`."), 1.0, "consistent"),
        Case(r, "long_english", wrap(THINK_EN * (N // len(THINK_EN)), ANSWER_EN), 1.0, "consistent"),
        Case(r, "long_chinese_thinking", wrap(THINK_ZH * (N // len(THINK_ZH)), ANSWER_EN), 0.0, "think is 'zh'"),
        Case(r, "100k_braces", "{" * N, 1.0, "consistent"),
        Case(r, "100k_brackets", "[" * N, 1.0, "consistent"),
        Case(r, "100k_dollars", "$" * N, 1.0, "consistent"),
        Case(r, "50k_boxed_openers", r"\boxed{" * (N // 2), 1.0, "consistent"),
        Case(r, "50k_math_openers", "\\(" * (N // 2), 1.0, "consistent"),
        Case(r, "unclosed_box", wrap(THINK_EN, "Therefore the answer is \\boxed{12"), 1.0, "consistent"),
        Case(r, "answer_only_in_think", f"<think>{THINK_EN}</think>", 1.0, "consistent"),
        Case(r, "answer_in_unclosed_think", f"<think>{THINK_EN}", 0.0, "unterminated <think>"),
    ]


def _spatial_cases() -> list[Case]:
    r = "spatial_iou"

    def ans(text: str) -> str:
        return f"<think>the cat is at the top left</think><answer>{text}</answer>"

    return [
        Case(r, "correct", ans("[0, 0, 10, 10]"), 1.0, "ok"),
        Case(r, "correct_bbox_2d", ans('{"bbox_2d": [0, 0, 10, 10], "label": "cat"}'), 1.0, "ok"),
        Case(r, "correct_points", ans("(0, 0) to (10, 10)"), 1.0, "ok"),
        # IoU: overlap 5 x 10 = 50, union 100 + 100 - 50 = 150.
        Case(r, "half_shifted", ans("[5, 0, 15, 10]"), 50 / 150, "ok"),
        Case(r, "wrong", ans("[20, 20, 30, 30]"), 0.0, "ok"),
        # Hedging: the best one-to-one matching, divided by max(#predicted, #gold) = 2.
        Case(r, "hedged_right_and_wrong", ans("[0, 0, 10, 10] or [5, 0, 15, 10]"), (1.0 + 0.0) / 2, "ok"),
        Case(r, "hedged_two_partial", ans("[5, 0, 15, 10] or [0, 5, 10, 15]"), (50 / 150) / 2, "ok"),
        Case(r, "hedged_bbox_2d", ans('[{"bbox_2d": [0, 0, 10, 10]}, {"bbox_2d": [0, 0, 5, 5]}]'), (1.0 + 0.0) / 2, "ok"),
        # Code in the answer: never a number.
        Case(r, "code_only", ans(touch("spatial_plain")), 0.0, "no box"),
        Case(r, "code_in_bbox_2d", ans('{"bbox_2d": [' + touch("spatial_bbox") + ", 0, 10, 10]}"), 0.0, "1 invalid"),
        Case(r, "code_in_list", ans("[0, 0, 10, " + touch("spatial_list") + "]"), 0.0, "no box"),
        # Power towers and overflowing numbers.
        Case(r, "tower_caret", ans("[0, 0, 9^9^9^9, 10]"), 0.0, "no box"),
        Case(r, "tower_python_bbox_2d", ans('{"bbox_2d": [0, 0, 9**9**9**9, 10]}'), 0.0, "1 invalid"),
        Case(r, "infinite_coordinate", ans("[0, 0, 1e999, 10]"), 0.0, "1 invalid"),
        # 100,000 characters.
        Case(r, "long_text_then_answer", "x" * N + "<answer>[0, 0, 10, 10]</answer>", 1.0, "ok"),
        Case(r, "100k_brackets", ans("[" * N), 0.0, "no box"),
        Case(r, "100k_parens", ans("(" * N), 0.0, "no box"),
        Case(r, "point_then_100k_spaces", "(0, 0)" + " " * N, 0.0, "no box"),
        Case(r, "points_100k_spaces_apart", "(0, 0)" + " " * N + "(10, 10)", 1.0, "ok"),
        Case(r, "7000_boxes", ans("[0, 0, 10, 10] " * 7000), 0.0, "more than 100"),
        # Malformed.
        Case(r, "unclosed_list", ans("[0, 0, 10, 10"), 0.0, "no box"),
        Case(r, "empty_list", ans("[]"), 0.0, "no box"),
        Case(r, "corners_swapped", ans("[10, 10, 0, 0]"), 0.0, "1 invalid"),
        Case(r, "answer_only_in_think", "<think>[0, 0, 10, 10]</think>", 0.0, "no box"),
        Case(r, "answer_in_unclosed_think", "<think>[0, 0, 10, 10]", 0.0, "unterminated <think>"),
    ]


CASES = _boxed_cases() + _choice_cases() + _numeric_cases() + _format_cases() + _language_cases() + _spatial_cases()
RULE_REWARDS = {"boxed_answer", "multiple_choice", "numeric", "format", "language_consistency", "spatial_iou"}


def _job(case: Case):
    return (case.reward, case.params, case.completion, SAMPLES[case.reward])


@pytest.fixture(scope="module")
def executor():
    ex = RewardExecutor(num_workers=2, timeout_s=TIMEOUT_S)
    # Start-up (spawning, imports, loading the language model) is not the cost of any case: warm up both
    # workers on every reward. Once both are ready, the first two chunks go one to each, and every chunk
    # of this interleaved list holds each reward once.
    warm = [_job(case) for _ in range(8) for case in CASES if case.id == "correct"]
    deadline = time.monotonic() + 300
    while not all(worker.ready for worker in ex._workers) and time.monotonic() < deadline:
        ex.score(warm[:len(RULE_REWARDS)])
    ex.score(warm)
    yield ex
    ex.close()
    for path in _MARKERS:
        path.unlink(missing_ok=True)


def _check(case: Case, result, elapsed: float | None = None) -> None:
    output, kind = result
    assert kind is None, output.details
    assert "error" not in output.details, output.details
    assert output.score == pytest.approx(case.score, rel=1e-12, abs=1e-12), output.details
    if case.reason is not None:
        assert case.reason in str(output.details.get("reason")), output.details
    if elapsed is not None:
        assert elapsed < TIMEOUT_S, f"{case.reward}/{case.id} took {elapsed:.2f}s"


def test_matrix_covers_every_rule_based_reward():
    assert {case.reward for case in CASES} == RULE_REWARDS
    for reward in RULE_REWARDS:
        ids = {case.id for case in CASES if case.reward == reward}
        assert "correct" in ids and any(i.startswith("wrong") for i in ids)
        assert any("code" in i for i in ids) and any("tower" in i for i in ids)
        assert any("100k" in i or "long" in i for i in ids) and "answer_in_unclosed_think" in ids
    assert len({(case.reward, case.id) for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{case.reward}-{case.id}" for case in CASES])
def test_case(executor, case):
    start = time.monotonic()
    [result] = executor.score([_job(case)])
    elapsed = time.monotonic() - start
    _check(case, result, elapsed)
    assert not any(path.exists() for path in _MARKERS), "code in a completion was run"


def test_whole_matrix_as_one_batch(executor):
    start = time.monotonic()
    results = executor.score([_job(case) for case in CASES])
    elapsed = time.monotonic() - start
    for case, result in zip(CASES, results):
        _check(case, result)
    # Two workers share the ~150 cases: the whole batch takes less than a few time limits.
    assert elapsed < 5 * TIMEOUT_S, f"matrix took {elapsed:.1f}s"
    assert not any(path.exists() for path in _MARKERS)
    assert executor.restarts == 0  # no worker ever had to be killed
