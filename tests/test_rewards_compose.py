import pytest

from data.schema import Sample
from rewards import RewardComposer

GOOD_RIGHT = r"<think>7+8=15</think><answer>\boxed{15}</answer>"
GOOD_WRONG = r"<think>7+8=16</think><answer>\boxed{16}</answer>"
BAD_RIGHT = r"7+8 so \boxed{15}"

TASKS = {
    "math": [
        {"name": "format", "weight": 0.2},
        {"name": "boxed_answer", "weight": 1.0, "requires": ["format"]},
    ],
    "default": [{"name": "boxed_answer", "weight": 0.5}],
}


def sample(task, gold="15"):
    return Sample(prompt="7+8?", ground_truth=gold, task=task)


def test_weights_and_gating():
    with RewardComposer(TASKS, num_workers=0) as composer:
        batch = composer.score(
            [GOOD_RIGHT, GOOD_WRONG, BAD_RIGHT, BAD_RIGHT],
            [sample("math"), sample("math"), sample("math"), sample("other")],
        )
    # 0.2*1 + 1*1; 0.2*1 + 1*0; format fails so accuracy is gated off; default task: 0.5*1.
    assert batch.scores == pytest.approx([1.2, 0.2, 0.0, 0.5])
    assert batch.components["format"] == [1.0, 1.0, 0.0, None]
    assert batch.components["boxed_answer"] == [1.0, 0.0, 1.0, 1.0]  # raw, before gating
    assert batch.details[2]["terms"]["boxed_answer"]["counted"] is False
    assert batch.details[3]["task"] == "other"
    assert batch.failures == {}


def test_unlisted_task_without_default():
    with RewardComposer({"math": TASKS["math"]}, num_workers=0) as composer:
        with pytest.raises(KeyError) as info:
            composer.score([GOOD_RIGHT], [sample("chemistry")])
    assert "chemistry" in str(info.value) and "math" in str(info.value)


@pytest.mark.parametrize("terms, message", [
    ([{"name": "format"}, {"name": "boxd_answer"}], "task 'math' term 1: unknown reward 'boxd_answer'"),
    ([{"name": "format", "params": {"mdoe": "x"}}], "task 'math' term 0 (format): reward 'format' has no parameter"),
    ([{"name": "format", "params": {"mode": "x"}}], "task 'math' term 0 (format): format: unknown mode"),
    ([{"name": "boxed_answer", "requires": ["format"]}], "requires 'format', which is not a term"),
    ([{"name": "format"}, {"name": "format"}], "appears twice"),
    ([{"name": "format", "wieght": 2}], "unknown key"),
    ([{"name": "format", "weight": "high"}], "'weight' must be a finite number"),
    ([], "non-empty list"),
])
def test_config_validation(terms, message):
    with pytest.raises(ValueError) as info:
        RewardComposer({"math": terms}, num_workers=0)
    assert message in str(info.value)


def test_failures_are_counted_and_score_zero():
    tasks = {"default": [{"name": "fixture_raise", "weight": 1.0}, {"name": "fixture_echo", "weight": 2.0}]}
    with RewardComposer(tasks, num_workers=0, import_modules=["tests.reward_fixtures"]) as composer:
        batch = composer.score(["1", "3"], [sample("x"), sample("y")])
    assert batch.scores == [2.0, 6.0]
    assert batch.failures == {"fixture_raise/error": 2}
    assert batch.details[0]["terms"]["fixture_raise"]["error"] == "error"


def test_with_worker_processes():
    with RewardComposer(TASKS, num_workers=2, timeout_s=5.0) as composer:
        batch = composer.score([GOOD_RIGHT, GOOD_WRONG] * 10, [sample("math")] * 20)
    assert batch.scores == pytest.approx([1.2, 0.2] * 10)


def test_length_mismatch():
    with RewardComposer(TASKS, num_workers=0) as composer:
        with pytest.raises(ValueError):
            composer.score([GOOD_RIGHT], [])


def test_batches_scored_in_parts_join_and_reorder_to_the_whole_batch():
    texts = [GOOD_RIGHT, GOOD_WRONG, BAD_RIGHT, BAD_RIGHT]
    owners = [sample("math"), sample("math"), sample("math"), sample("other")]
    with RewardComposer(TASKS, num_workers=0) as composer:
        whole = composer.score(texts, owners)
        # Parts as an engine might finish them: completions 2 and 0 first, then 3 and 1.
        first, second = composer.score([texts[2], texts[0]], [owners[2], owners[0]]), \
            composer.score([texts[3], texts[1]], [owners[3], owners[1]])
    first.failures, first.failure_reasons = {"format/error": 1}, {"format/error": "boom"}
    second.failures, second.failure_reasons = {"format/error": 2}, {"format/error": "later"}
    joined = type(whole).concat([first, second])
    assert joined.scores == pytest.approx([0.0, 1.2, 0.5, 0.2])
    assert joined.failures == {"format/error": 3} and joined.failure_reasons == {"format/error": "boom"}
    back = joined.permuted([1, 3, 0, 2])  # place i takes completion order[i]
    assert back.scores == pytest.approx(whole.scores)
    assert back.components == whole.components and back.completions == whole.completions
    assert [d["task"] for d in back.details] == ["math", "math", "math", "other"]
    with pytest.raises(ValueError, match="permutation of 4"):
        joined.permuted([0, 0, 1, 2])
