import pytest

import rewards
from data.schema import Sample
from rewards import RewardOutput, get_reward, list_rewards, register_reward
from rewards.base import call_reward


def test_builtins_registered_with_introspected_params():
    names = [spec.name for spec in list_rewards()]
    for name in ("boxed_answer", "format", "multiple_choice", "numeric"):
        assert name in names
    assert get_reward("boxed_answer").params == {"require_answer_tag": False, "reject_hedging": False}
    numeric = get_reward("numeric")
    assert numeric.params["k"] == 1.0 and numeric.params["rel_eps"] == 1e-9
    assert get_reward("format").params["mode"] == "think_answer"
    assert "boxed" in get_reward("boxed_answer").doc


def test_unknown_reward_lists_registered_names():
    with pytest.raises(KeyError) as info:
        get_reward("no_such_reward")
    message = str(info.value)
    assert "no_such_reward" in message and "boxed_answer" in message and "numeric" in message


def test_float_result_is_normalised_and_bad_results_raise():
    @register_reward("_test_registry_float")
    def half(completion, sample, *, bonus: float = 0.0):
        return 0.5 + bonus

    spec = get_reward("_test_registry_float")
    assert spec.params == {"bonus": 0.0}
    out = call_reward(spec, "x", Sample(prompt=""), {"bonus": 0.25})
    assert out == RewardOutput(0.75, {})
    with pytest.raises(ValueError, match="no parameter"):
        spec.check_params({"bonsu": 1})

    @register_reward("_test_registry_nan")
    def nan(completion, sample):
        return float("nan")

    with pytest.raises(ValueError, match="non-finite"):
        call_reward(get_reward("_test_registry_nan"), "x", Sample(prompt=""), {})


def test_name_clash_rejected():
    with pytest.raises(ValueError, match="already registered"):
        @register_reward("boxed_answer")
        def other(completion, sample):
            return 0.0


def test_dotted_path_loads_module():
    spec = get_reward("tests.reward_fixtures:fixture_len")
    assert spec.fn(completion="abc", sample=None) == 3.0
    with pytest.raises(KeyError):
        get_reward("tests.reward_fixtures:missing_function")
    assert rewards.get_reward is get_reward
