"""Synthetic tiny-preset data: answers checked by independent computation, splits, seeds, vocabulary."""

from __future__ import annotations

import re

import pytest

from data.arithmetic import column_steps
from data.schema import Sample, validate_rubrics
from data.synthetic import (
    LANGUAGE_MARKERS,
    TEXT_LANGUAGES,
    math_and_choice,
    multilingual_arithmetic,
    rubric_short_answers,
    step_texts,
)
from rewards.base import call_reward, get_reward
from rewards.rubric import rubric_check_results, rubric_checks, score_rubrics


@pytest.fixture(scope="module")
def tokenizer():
    from trainer.tiny_model import build_tokenizer

    return build_tokenizer()


def assert_tiny_vocab(tokenizer, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids, text
    assert tokenizer.decode(ids) == text


def reward(name: str, completion: str, sample: Sample) -> float:
    return call_reward(get_reward(name), completion, sample, {}).score


def think_and_box(target: str) -> tuple[str, str]:
    match = re.fullmatch(r"<think>(.*)</think><answer>(.*)</answer>", target, re.DOTALL)
    assert match, target
    box = re.search(r"\\boxed\{([^{}]*)\}", match.group(2))
    assert box, target
    return match.group(1), box.group(1)


def language_marker_consistent(completion: str, sample: Sample) -> bool:
    """Tiny render: every reasoning step and the answer carry the sample's `language_marker`, the
    convention M-Thinker's language-consistency reward checks, here without a language-ID model."""
    marker = sample.metadata["language_marker"]
    match = re.fullmatch(r"<think>(.+)</think><answer>(.*)</answer>", completion, re.DOTALL)
    if match is None:
        return False
    steps = [re.fullmatch(r"([=+]*)\d+(?:\+\d+)*=\d+", step) for step in match.group(1).split(",")]
    answer_marked = re.fullmatch(re.escape(marker) + r"\\boxed\{\d+\}", match.group(2)) is not None
    return answer_marked and all(step is not None and step.group(1) == marker for step in steps)


def sum_from_steps(steps: list[str]) -> int:
    """Rebuild a sum from column steps `d+d(+c)=t`, checking each step's own arithmetic."""
    value, last = 0, 0
    for i, step in enumerate(steps):
        terms, total = step.split("=")
        assert sum(int(t) for t in terms.split("+")) == int(total), step
        value += (int(total) % 10) * 10**i
        last = int(total) // 10
    return value + last * 10 ** len(steps)


def carries_of(a: int, b: int) -> int:
    width = max(len(str(a)), len(str(b)))
    return sum((a % 10**k) + (b % 10**k) >= 10**k for k in range(1, width + 1))


def test_two_operand_steps_match_quickstart():
    for a, b in [(47, 385), (99, 99), (10, 90), (999, 1)]:
        assert ",".join(step_texts([a, b])) == column_steps(a, b)


# ---- multilingual_arithmetic ----


def test_multilingual_tiny_answers_markers_and_vocab(tokenizer):
    languages = ("en", "zh", "fr", "de")
    train, held_out = multilingual_arithmetic(6, 3, seed=11, languages=languages)
    assert len(train) == 6 * 4 and len(held_out) == 3 * 4
    for sample in train + held_out:
        lang = sample.metadata["language"]
        marker = LANGUAGE_MARKERS[lang]
        assert sample.metadata["language_marker"] == marker
        assert sample.prompt.startswith(marker)
        a, b = (int(x) for x in sample.prompt[len(marker):].split("+"))
        assert sample.ground_truth == str(a + b)
        assert sample.metadata["problem_id"] == f"madd-{a}-{b}" and sample.task == "multilingual_arithmetic"
        target = sample.metadata["sft_target"]
        think, box = think_and_box(target)
        assert box == str(a + b)
        steps = think.split(",")
        assert all(step.startswith(marker) and step[len(marker)].isdigit() for step in steps)
        assert sum_from_steps([step[len(marker):] for step in steps]) == a + b
        assert target.endswith(f"<answer>{marker}\\boxed{{{a + b}}}</answer>")
        assert sample.metadata["english_reference"] == column_steps(a, b)
        assert language_marker_consistent(target, sample)
        assert_tiny_vocab(tokenizer, sample.prompt)
        assert_tiny_vocab(tokenizer, target)
        assert reward("boxed_answer", target, sample) == 1.0
    # English is the unmarked convention: its samples are the quickstart's.
    en = [s for s in train if s.metadata["language"] == "en"]
    assert all(s.metadata["sft_target"] == f"<think>{column_steps(*map(int, s.prompt.split('+')))}</think>"
               f"<answer>\\boxed{{{s.ground_truth}}}</answer>" for s in en)


def test_multilingual_translations_share_problem_and_splits_are_disjoint():
    train, held_out = multilingual_arithmetic(20, 10, seed=3)
    by_problem: dict[str, list[str]] = {}
    for sample in train:
        by_problem.setdefault(sample.metadata["problem_id"], []).append(sample.metadata["language"])
    assert len(by_problem) == 20 and all(langs == ["en", "zh", "fr"] for langs in by_problem.values())
    assert not set(by_problem) & {s.metadata["problem_id"] for s in held_out}
    assert len({s.id for s in train + held_out}) == len(train) + len(held_out)


def test_multilingual_determinism():
    assert multilingual_arithmetic(5, 2, seed=7) == multilingual_arithmetic(5, 2, seed=7)
    assert multilingual_arithmetic(5, 2, seed=7) != multilingual_arithmetic(5, 2, seed=8)
    # The problems depend on the seed only, not on the render or the languages asked for.
    tiny, _ = multilingual_arithmetic(5, 2, seed=7, languages=("en",))
    text, _ = multilingual_arithmetic(5, 2, seed=7, languages=("fr", "en"), render="text")
    assert [s.metadata["problem_id"] for s in tiny] == [s.metadata["problem_id"] for s in text[::2]]


def test_language_marker_check_rejects_mixed_or_missing_markers():
    (zh,), _ = multilingual_arithmetic(1, 0, seed=0, languages=("zh",))
    (en,), _ = multilingual_arithmetic(1, 0, seed=0, languages=("en",))
    steps = zh.metadata["sft_target"].split("<think>")[1].split("</think>")[0].split(",")
    total = zh.ground_truth
    good = "<think>" + ",".join(steps) + f"</think><answer>=\\boxed{{{total}}}</answer>"
    assert language_marker_consistent(good, zh)
    # One step falls back to English (no marker).
    mixed = "<think>" + ",".join([steps[0][1:], *steps[1:]]) + f"</think><answer>=\\boxed{{{total}}}</answer>"
    assert not language_marker_consistent(mixed, zh)
    assert not language_marker_consistent(good.replace("<answer>=", "<answer>"), zh)  # answer unmarked
    assert not language_marker_consistent(good.replace("<answer>=", "<answer>=="), zh)  # another language
    assert not language_marker_consistent(f"<answer>=\\boxed{{{total}}}</answer>", zh)  # no reasoning
    assert not language_marker_consistent(en.metadata["sft_target"], zh)
    assert not language_marker_consistent(zh.metadata["sft_target"], en)


def test_multilingual_text_render_is_judged_in_its_language():
    languages = ("en", "zh", "fr", "de", "es", "ja")
    train, held_out = multilingual_arithmetic(2, 1, seed=5, languages=languages, render="text")
    assert len(train) == 12 and len(held_out) == 6
    for sample in train:
        a, b = (int(x) for x in re.findall(r"\d+", sample.prompt.split("\n")[0]))
        assert sample.ground_truth == str(a + b)
        target = sample.metadata["sft_target"]
        assert think_and_box(target)[1] == str(a + b)
        assert "language_marker" not in sample.metadata
        assert reward("boxed_answer", target, sample) == 1.0
        assert reward("language_consistency", target, sample) == 1.0, (sample.metadata["language"], target)
        assert reward("format", target, sample) == 1.0
    en, fr = train[0], train[2]
    assert (en.metadata["language"], fr.metadata["language"]) == ("en", "fr")
    assert reward("language_consistency", en.metadata["sft_target"], fr) == 0.0
    assert fr.metadata["english_reference"] in en.metadata["sft_target"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"languages": ("en", "xx")}, "has no language"),
        ({"languages": ("ru",), "render": "text"}, "has no language"),
        ({"languages": ("en", "en")}, "without repeats"),
        ({"languages": ()}, "non-empty"),
        ({"render": "html"}, "render must be one of"),
    ],
)
def test_multilingual_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        multilingual_arithmetic(2, 1, seed=0, **kwargs)


def test_text_render_languages_cover_the_defaults():
    assert {"en", "zh", "fr"} <= set(TEXT_LANGUAGES) <= set(LANGUAGE_MARKERS)


# ---- rubric_short_answers ----

CHECKS_47_385 = [
    {"check": "answer_equals", "value": "432", "points": 5, "criterion": "States that 47 + 385 = 432."},
    {"check": "steps_correct", "value": ["7+5=12", "4+8+1=13", "3+1=4"], "points": 3, "criterion": "Right steps."},
    {"check": "single_boxed", "value": None, "points": 1, "criterion": "One boxed answer."},
    {"check": "max_answer_digits", "value": 3, "points": 1, "criterion": "At most 3 digits."},
    {"check": "wrong_step", "value": None, "points": -3, "criterion": "A wrong intermediate sum."},
    {"check": "dropped_carry", "value": "322", "points": -2, "criterion": "Answers 322."},
]


@pytest.mark.parametrize(
    "completion, expected",
    [
        # max = 5+3+1+1 = 10, min = -3-2 = -5, score = (achieved + 5) / 15
        ("<think>7+5=12,4+8+1=13,3+1=4</think><answer>\\boxed{432}</answer>", 15 / 15),
        # carries dropped: every step is true arithmetic, the answer is the no-carry sum: 1+1-2 = 0
        ("<think>7+5=12,4+8=12,3=3</think><answer>\\boxed{322}</answer>", 5 / 15),
        # a wrong step and a wrong answer: 1+1-3 = -1
        ("<think>7+5=12,4+8+1=14,3+1=4</think><answer>\\boxed{442}</answer>", 4 / 15),
        # right but boxed twice: 5+3+1 = 9
        ("<think>7+5=12,4+8+1=13,3+1=4</think><answer>\\boxed{432}\\boxed{432}</answer>", 14 / 15),
        # nothing at all
        ("", 5 / 15),
        # text-render wording is read the same way
        ("<think>Column 1: 7 + 5 = 12. Column 2: 4 + 8 + 1 = 13. Column 3: 3 + 1 = 4.</think>"
         "<answer>The answer is \\boxed{432}.</answer>", 15 / 15),
        # a four-digit wrong answer with the wrong-step penalty: -3
        ("<think>7+5=13</think><answer>\\boxed{4321}</answer>", 3 / 15),
    ],
)
def test_rubric_scores_by_hand(completion, expected):
    rubrics = [{"criterion": c["criterion"], "points": c["points"]} for c in CHECKS_47_385]
    sample = Sample(prompt="47+385", ground_truth=rubrics, metadata={"rubric_checks": CHECKS_47_385})
    assert rubric_checks(completion, sample).score == pytest.approx(expected)
    # The same verdicts through the judge-based rubric reward's normalisation give the same score.
    verdicts = rubric_check_results(completion, sample)
    assert score_rubrics(sample.ground_truth, verdicts).score == pytest.approx(expected)


def test_rubric_generator_answers_and_rubrics(tokenizer):
    train, held_out = rubric_short_answers(25, 10, seed=2)
    assert len(train) == 25 and len(held_out) == 10
    assert not {s.prompt for s in train} & {s.prompt for s in held_out}
    assert any(len(s.prompt.split("+")) == 3 for s in train + held_out)
    for sample in train + held_out:
        operands = [int(x) for x in sample.prompt.split("+")]
        total = sum(operands)
        assert sample.task == "rubric"
        rubrics = validate_rubrics(sample.ground_truth)
        checks = sample.metadata["rubric_checks"]
        assert [(r["criterion"], r["points"]) for r in rubrics] == [(c["criterion"], c["points"]) for c in checks]
        kinds = {c["check"]: c for c in checks}
        assert kinds["answer_equals"]["value"] == str(total) and kinds["answer_equals"]["points"] > 0
        assert kinds["wrong_step"]["points"] < 0
        if "dropped_carry" in kinds:
            # Independent no-carry sum: each column's digit sum mod 10.
            width = max(len(str(x)) for x in operands)
            no_carry = sum((sum(x // 10**k % 10 for x in operands) % 10) * 10**k for k in range(width))
            assert kinds["dropped_carry"]["value"] == str(no_carry) != str(total)
        target = sample.metadata["sft_target"]
        think, box = think_and_box(target)
        assert box == str(total) and sum_from_steps(think.split(",")) == total
        assert rubric_checks(target, sample).score == 1.0
        assert rubric_checks("<answer>\\boxed{0}</answer>", sample).score < 1.0
        assert_tiny_vocab(tokenizer, sample.prompt)
        assert_tiny_vocab(tokenizer, target)


def test_rubric_generator_determinism_and_text_render():
    assert rubric_short_answers(6, 2, seed=4) == rubric_short_answers(6, 2, seed=4)
    assert rubric_short_answers(6, 2, seed=4) != rubric_short_answers(6, 2, seed=5)
    train, _ = rubric_short_answers(5, 0, seed=4, render="text")
    for sample in train:
        operands = [int(x) for x in re.findall(r"\d+", sample.prompt.split("\n")[0])]
        assert think_and_box(sample.metadata["sft_target"])[1] == str(sum(operands))
        assert rubric_checks(sample.metadata["sft_target"], sample).score == 1.0


# ---- math_and_choice ----


def test_math_and_choice_tiny(tokenizer):
    train, held_out = math_and_choice(30, 10, seed=9, choice_share=0.4)
    assert len(train) == 30 and len(held_out) == 10
    assert sum(s.task == "multiple_choice" for s in train) == 12
    assert sum(s.task == "multiple_choice" for s in held_out) == 4
    pairs = lambda split: {tuple(int(x) for x in s.prompt.split("=")[0].split("+")) for s in split}  # noqa: E731
    assert not pairs(train) & pairs(held_out)
    for sample in train + held_out:
        problem = sample.prompt.split("=")[0]
        a, b = (int(x) for x in problem.split("+"))
        assert sample.metadata["difficulty"] == carries_of(a, b) + max(len(str(a)), len(str(b))) - 2
        target = sample.metadata["sft_target"]
        think, box = think_and_box(target)
        assert_tiny_vocab(tokenizer, sample.prompt)
        assert_tiny_vocab(tokenizer, target)
        if sample.task == "math":
            assert sample.prompt == problem and sample.ground_truth == box == str(a + b)
            assert sum_from_steps(think.split(",")) == a + b
            assert reward("boxed_answer", target, sample) == 1.0
            continue
        choices = sample.prompt.split("=", 1)[1].split(",")
        assert choices == sample.metadata["choices"] and len(set(choices)) == 4
        assert all(int(c) >= 10 for c in choices)
        assert [int(c) for c in choices].count(a + b) == 1
        index = [int(c) for c in choices].index(a + b) + 1
        assert sample.ground_truth == box == str(index) and sample.metadata["answer_index"] == index
        *steps, pick = think.split(",")
        assert sum_from_steps(steps) == a + b and pick == f"{a + b}={index}"
        assert reward("multiple_choice", target, sample) == 1.0
        wrong = target.replace(f"\\boxed{{{index}}}", f"\\boxed{{{index % 4 + 1}}}")
        assert reward("multiple_choice", wrong, sample) == 0.0


def test_math_and_choice_text_render_letters():
    train, _ = math_and_choice(8, 0, seed=1, choice_share=1.0, render="text")
    assert {s.task for s in train} == {"multiple_choice"}
    for sample in train:
        lines = sample.prompt.split("\n")
        a, b = (int(x) for x in re.findall(r"\d+", lines[0]))
        options = {line[0]: int(line[3:]) for line in lines[1:5]}
        assert list(options) == ["A", "B", "C", "D"]
        assert [str(v) for v in options.values()] == sample.metadata["choices"]
        assert options[sample.ground_truth] == a + b
        assert reward("multiple_choice", sample.metadata["sft_target"], sample) == 1.0


def test_math_and_choice_shares_determinism_and_errors():
    train, held_out = math_and_choice(6, 3, seed=0, choice_share=0.0)
    assert {s.task for s in train + held_out} == {"math"}
    assert math_and_choice(6, 3, seed=0) == math_and_choice(6, 3, seed=0)
    assert math_and_choice(6, 3, seed=0) != math_and_choice(6, 3, seed=1)
    with pytest.raises(ValueError, match="choice_share"):
        math_and_choice(2, 1, seed=0, choice_share=1.5)
    with pytest.raises(ValueError, match="n_train"):
        math_and_choice(-1, 1, seed=0)


def test_rubric_checks_worth_nothing_are_an_error_not_a_score():
    checks = [{"check": "single_boxed", "value": None, "points": 0, "criterion": "One box."}]
    sample = Sample(prompt="1+1", metadata={"rubric_checks": checks})
    assert rubric_check_results("<answer>\\boxed{2}</answer>", sample) == [True]
    with pytest.raises(ValueError, match="worth 0 points"):
        rubric_checks("<answer>\\boxed{2}</answer>", sample)
    assert rubric_checks("x", Sample(prompt="1+1")).details["reason"] == "sample has no metadata.rubric_checks"
