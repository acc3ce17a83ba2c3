"""Rubric and cross-lingual alignment rewards: parsing and scoring by hand, then end to end through the
real local judge server (tiny random-init model, so its replies never parse)."""

import socket

import pytest

from data.schema import Sample, validate_rubrics
from rewards import RewardComposer, RewardExecutor, get_reward
from rewards.base import call_reward_batch
from rewards.cross_lingual import (attach_english_references, build_english_references, cross_lingual_alignment,
                                   cross_lingual_batch, parse_alignment, score_alignment)
from rewards.judge_server import serve_in_background
from rewards.rubric import parse_verdict, rubric, rubric_batch, score_rubrics

RUBRICS = [
    {"criterion": "States the dose in mg", "points": 5},
    {"criterion": "Advises seeing a doctor", "points": 3},
    {"criterion": "Recommends a contraindicated drug", "points": -2},
    {"criterion": "Invents a study", "points": -4},
]


@pytest.fixture(scope="module")
def judge_url(tiny_model_dir):
    url, stop = serve_in_background(tiny_model_dir, served_model_name="tiny")
    yield url
    stop()


def judge_params(url, **extra):
    return {"base_url": url, "model": "tiny", "max_tokens": 8, "backoff_s": 0.01, **extra}


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


# -- rubric: parsing and scoring ------------------------------------------------------------------

@pytest.mark.parametrize("reply, verdict", [
    ('{"met": true}', True),
    ('{"met": false}', False),
    ('The response gives 5 mg.\n{"met": true}', True),
    ('```json\n{"met": false}\n```', False),
    ('<think>maybe {"met": false}</think>\n{"met": true}', True),
    ('{"met": true, "why": "dose given"}', True),
    ('{"met": true}\n{"met": false}', False),  # the last line decides
    ("MET", None),
    ('{"met": "yes"}', None),
    ('{"met": 1}', None),
    ('I think {"met": true} fits', None),
    ('{"met": true', None),
    ("", None),
    (None, None),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) is verdict


def test_score_normalisation_by_hand():
    # achieved = 5 + (-2) = 3; max = 5 + 3 = 8; min = -2 + -4 = -6; (3 - -6) / (8 - -6) = 9/14.
    out = score_rubrics(RUBRICS, [True, False, True, None])
    assert out.score == pytest.approx(9 / 14)
    assert out.details == {"achieved": 3, "max_possible": 8, "min_possible": -6,
                           "met": [True, False, True, None], "unparsable": 1}
    assert score_rubrics(RUBRICS, [True, True, False, False]).score == 1.0
    assert score_rubrics(RUBRICS, [False, False, True, True]).score == 0.0
    # Meeting nothing: no points gained or lost sits at -min / (max - min) = 6/14.
    assert score_rubrics(RUBRICS, [False] * 4).score == pytest.approx(6 / 14)
    only_positive = [{"criterion": "a", "points": 2}, {"criterion": "b", "points": 6}]
    assert score_rubrics(only_positive, [False, True]).score == pytest.approx(0.75)
    only_negative = [{"criterion": "a", "points": -1}, {"criterion": "b", "points": -3}]
    assert score_rubrics(only_negative, [True, False]).score == pytest.approx(0.75)


@pytest.mark.parametrize("rubrics, message", [
    ([], "non-empty list"),
    ("be nice", "non-empty list"),
    ([{"criterion": "x", "points": 11}], "integer in [-10, 10]"),
    ([{"criterion": "x", "points": -11}], "integer in [-10, 10]"),
    ([{"criterion": "x", "points": 2.5}], "integer in [-10, 10]"),
    ([{"criterion": "x", "points": True}], "integer in [-10, 10]"),
    ([{"criterion": "x", "points": "3"}], "integer in [-10, 10]"),
    ([{"points": 3}], "'criterion' must be a non-empty string"),
    ([{"criterion": "x", "points": 0}], "worth 0 points"),
])
def test_invalid_rubrics_score_zero_without_asking_the_judge(rubrics, message):
    with pytest.raises(ValueError) as info:
        validate_rubrics(rubrics)
    assert message in str(info.value)
    # The judge URL is a closed port: a request would fail, so a 0 with a reason proves none was made.
    [out] = rubric_batch(["answer"], [Sample(prompt="q", ground_truth=rubrics)], **judge_params(closed_url()))
    assert out.score == 0.0 and "invalid rubrics" in out.details["reason"] and "error" not in out.details


def test_rubrics_column_takes_precedence_over_ground_truth():
    bad = [{"criterion": "x", "points": 99}]
    sample = Sample(prompt="q", ground_truth=bad, metadata={"rubrics": [{"criterion": "x", "points": 99.5}]})
    [out] = rubric_batch(["a"], [sample], **judge_params(closed_url()))
    assert "99.5" in out.details["reason"]


def test_unanswered_judge_is_a_counted_failure():
    sample = Sample(prompt="q", ground_truth=RUBRICS[:1])
    params = judge_params(closed_url(), max_retries=0)
    with pytest.raises(RuntimeError, match="judge at http://127.0.0.1:[0-9]+/v1 gave no reply for 1 of 1"):
        rubric("a", sample, **params)
    with RewardComposer({"default": [{"name": "rubric", "params": params}]}, num_workers=0) as composer:
        batch = composer.score(["a"], [sample])
    assert batch.scores == [0.0] and batch.failures == {"rubric/error": 1}
    # The reason names the endpoint, so the run's warning can say which judge is down.
    assert batch.failure_reasons["rubric/error"].startswith(f"judge at {params['base_url']} gave no reply")


def test_registry_and_config_validation():
    spec = get_reward("rubric")
    assert spec.extras["batch"] is rubric_batch and spec.params["api_key_env"] == "JUDGE_API_KEY"
    assert get_reward("cross_lingual_alignment").extras["batch"] is cross_lingual_batch
    with pytest.raises(ValueError, match="base_url"):
        RewardComposer({"default": [{"name": "rubric"}]}, num_workers=0)
    with pytest.raises(ValueError, match="max_concurrency"):
        RewardComposer({"default": [{"name": "rubric", "params": {"base_url": "http://h/v1", "model": "m",
                                                                  "max_concurrency": 0}}]}, num_workers=0)


def test_call_reward_batch_falls_back_to_one_call_per_completion():
    import tests.reward_fixtures  # noqa: F401 - registers fixture_echo / fixture_raise

    results = call_reward_batch(get_reward("fixture_echo"), ["2", "x"], [Sample(prompt="q")] * 2, {"scale": 3.0})
    assert results[0][0].score == 6.0 and results[0][1] is None
    assert results[1][0].score == 0.0 and results[1][1] == "error"


# -- cross-lingual alignment: parsing and scoring ---------------------------------------------------

def test_alignment_parsing_and_score():
    reply = 'Key results found.\n{"key_results": ["x = 3", "y = 4", "answer 7"], "matched": [true, false, true]}'
    assert parse_alignment(reply) == (["x = 3", "y = 4", "answer 7"], [True, False, True])
    out = score_alignment(reply)
    assert out.score == pytest.approx(2 / 3) and out.details == {"key_results": 3, "matched": 2, "unparsable": 0}
    assert score_alignment('```json\n{"key_results": ["a"], "matched": [true]}\n```').score == 1.0
    for bad in ['{"key_results": ["a", "b"], "matched": [true]}',  # lengths differ
                '{"key_results": ["a"], "matched": [1]}',  # not a boolean
                '{"key_results": [], "matched": []}',  # nothing to match
                '{"key_results": [""], "matched": [true]}',
                '{"matched": [true]}',
                "all key results match",
                None]:
        out = score_alignment(bad)
        assert out.score == 0.0 and out.details == {"unparsable": 1}, bad


def test_missing_reference_or_reasoning_scores_zero_without_a_request():
    params = judge_params(closed_url())
    [no_ref] = cross_lingual_batch(["<think>3+4=7</think>7"], [Sample(prompt="q")], **params)
    assert no_ref.score == 0.0 and "no English reference" in no_ref.details["reason"]
    ref = Sample(prompt="q", metadata={"english_reference": "3+4=7"})
    [empty] = cross_lingual_batch(["<think> </think>7"], [ref], **params)
    assert empty.score == 0.0 and "no reasoning" in empty.details["reason"]


def test_build_english_references():
    def s(pid, lang, sid=None):
        return Sample(prompt="q", id=sid, metadata={"language": lang, **({"problem_id": pid} if pid else {})})

    samples = [s("p1", "en"), s("p1", "en"), s("p1", "en"), s("p1", "zh"), s("p2", "EN-us"), s(None, "english", "p3"),
               s("p4", "fr"), s("p5", "en")]
    completions = ["<think>long correct path</think>1", "<think>short ok</think>1", "<think>bad</think>2",
                   "<think>ok</think>1", "<think>p2 path</think>5", "<think>p3 path</think>9", "<think>fr</think>1",
                   "<think>half</think>1"]
    correct = [True, 1.0, False, True, True, True, True, 0.5]
    refs = build_english_references(samples, completions, correct)
    # p1: the shortest correct English one ("bad" is wrong, "ok" is Chinese); p3 via the sample id;
    # p4 is French only; p5 scored 0.5, not correct.
    assert refs == {"p1": "short ok", "p2": "p2 path", "p3": "p3 path"}
    targets = [s("p1", "de"), s("p2", "ja"), s("p4", "fr")]
    assert attach_english_references(targets, refs) == 2
    assert targets[0].field("english_reference") == "short ok" and "english_reference" not in targets[2].metadata
    with pytest.raises(ValueError):
        build_english_references(samples, completions, correct[:-1])


# -- end to end through the real judge server -------------------------------------------------------

def test_rubric_end_to_end_unparsable_scores_zero(judge_url):
    positive = [{"criterion": "Gives 12", "points": 4}, {"criterion": "Shows 5+7", "points": 2}]
    with_negative = [{"criterion": "Gives 12", "points": 5}, {"criterion": "Says 13", "points": -2}]
    samples = [Sample(prompt="5+7=", ground_truth=positive), Sample(prompt="5+7=", ground_truth=with_negative)]
    params = judge_params(judge_url)
    with RewardComposer({"default": [{"name": "rubric", "params": params}]}, num_workers=0) as composer:
        batch = composer.score(["<think>5+7=12</think>12", "12"], samples)
    assert batch.failures == {}
    first, second = (d["terms"]["rubric"]["details"] for d in batch.details)
    # The random model never ends with {"met": ...}: every verdict is unparsable, i.e. not met.
    assert batch.scores[0] == 0.0 and first["unparsable"] == 2 and first["met"] == [None, None]
    # Not meeting the negative criterion either: (0 - -2) / (5 - -2).
    assert batch.scores[1] == pytest.approx(2 / 7) and second["unparsable"] == 2


def test_rubric_in_a_worker_process(judge_url):
    params = judge_params(judge_url)
    sample = Sample(prompt="5+7=", ground_truth=[{"criterion": "Gives 12", "points": 3}])
    with RewardExecutor(num_workers=1, timeout_s=30, import_modules=["rewards.rubric"]) as executor:
        [(output, error)] = executor.score([("rubric", params, "12", sample)])
    assert error is None, output.details
    assert output.score == 0.0 and output.details["unparsable"] == 1


def test_cross_lingual_end_to_end_unparsable_scores_zero(judge_url):
    sample = Sample(prompt="5+7=", metadata={"english_reference": "5+7=12"})
    out = cross_lingual_alignment("<think>5+7=12</think>12", sample, **judge_params(judge_url))
    assert out.score == 0.0 and out.details == {"unparsable": 1}
