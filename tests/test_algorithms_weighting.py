import json
import math

import pytest

from trainer.algorithms.weighting import (
    WEIGHTING_RULES,
    TaskWeighter,
    difficulty,
    difficulty_gaussian,
    group_accuracies,
    register_weighting_rule,
    uniform,
)


def test_rules_by_hand():
    assert difficulty(0.5) == 1.0
    assert difficulty(0.25) == pytest.approx(0.75)  # 4 * 0.25 * 0.75
    assert difficulty(0.0) == 0.0 and difficulty(1.0) == 0.0
    assert difficulty(0.0, floor=0.2) == pytest.approx(0.2)
    assert difficulty(0.25, floor=0.2) == pytest.approx(0.2 + 0.8 * 0.75)
    assert difficulty_gaussian(0.5) == 1.0
    assert difficulty_gaussian(0.25, sigma=0.25) == pytest.approx(math.exp(-0.5))
    assert uniform(0.0) == uniform(0.7) == 1.0


def test_sample_weights_from_each_groups_accuracy():
    group_index = [0, 0, 0, 0, 1, 1, 2, 2]
    correct = [True, False, False, False, True, True, True, False]
    assert group_accuracies(group_index, correct) == {0: 0.25, 1: 1.0, 2: 0.5}
    weighter = TaskWeighter()
    assert weighter.sample_weights(group_index, correct) == pytest.approx([0.75] * 4 + [0.0, 0.0] + [1.0, 1.0])
    assert TaskWeighter("uniform").sample_weights(group_index, correct) == [1.0] * 8
    assert weighter.stats == {}  # sample weights do not touch the running statistics


def test_task_weights_follow_ema_accuracy():
    weighter = TaskWeighter("difficulty", ema=0.5)
    # Step 1: math 2/4 right (one group of 4), code 4/4 right (two groups of 2).
    weighter.observe(["math"] * 4 + ["code"] * 4, [True, True, False, False, True, True, True, True],
                     [0, 0, 0, 0, 1, 1, 2, 2])
    assert weighter.stats["math"] == {"ema_accuracy": 0.5, "samples": 4, "groups": 1, "steps": 1}
    assert weighter.stats["code"]["groups"] == 2
    # Rule values: math 1.0, code 0.0; scaled to mean 1 over two tasks.
    assert weighter.task_weights() == pytest.approx({"code": 0.0, "math": 2.0})
    # Step 2: math 0/2 -> EMA 0.5*0.5 + 0.5*0 = 0.25; code 1/2 -> 0.5*1 + 0.5*0.5 = 0.75. Both weigh 0.75.
    weighter.observe(["math", "math", "code", "code"], [False, False, True, False], [3, 3, 4, 4])
    assert weighter.stats["math"]["ema_accuracy"] == pytest.approx(0.25)
    assert weighter.stats["code"]["ema_accuracy"] == pytest.approx(0.75)
    assert weighter.stats["math"]["samples"] == 6 and weighter.stats["math"]["steps"] == 2
    assert weighter.task_weights() == pytest.approx({"code": 1.0, "math": 1.0})
    # A task absent from a step keeps its EMA.
    weighter.observe(["code"], [True], [5])
    assert weighter.stats["math"]["ema_accuracy"] == pytest.approx(0.25)


def test_all_zero_rule_values_give_equal_weights():
    weighter = TaskWeighter()
    weighter.observe(["a", "b"], [True, True], [0, 1])
    assert weighter.task_weights() == {"a": 1.0, "b": 1.0}
    assert TaskWeighter().task_weights() == {}


def test_state_dict_round_trip():
    weighter = TaskWeighter(ema=0.8)
    weighter.observe(["a", "a", "b"], [True, False, False], [0, 0, 1])
    state = json.loads(json.dumps(weighter.state_dict()))  # must survive a JSON checkpoint
    resumed = TaskWeighter(ema=0.8)
    resumed.load_state_dict(state)
    assert resumed.task_weights() == weighter.task_weights()
    for w in (weighter, resumed):
        w.observe(["a", "b"], [True, True], [2, 3])
    assert resumed.stats == weighter.stats
    with pytest.raises(ValueError):
        resumed.load_state_dict({})


def test_custom_rule_and_validation():
    @register_weighting_rule("test_hard_first")
    def hard_first(group_accuracy, *, power=1.0):
        return (1.0 - group_accuracy) ** power

    assert WEIGHTING_RULES.get("test_hard_first").fn is hard_first
    assert WEIGHTING_RULES.get("test_hard_first").params == {"power": 1.0}
    weighter = TaskWeighter("test_hard_first", {"power": 2.0})
    assert weighter.sample_weights([0, 0], [True, False]) == pytest.approx([0.25, 0.25])
    with pytest.raises(KeyError):
        TaskWeighter("no_such_rule")
    with pytest.raises(ValueError, match="weighting rule 'difficulty' has no parameter 'sigma'; its parameters: floor"):
        TaskWeighter("difficulty", {"sigma": 0.1})  # a parameter the rule does not take
    with pytest.raises(ValueError):
        TaskWeighter(ema=1.0)
    with pytest.raises(ValueError):
        TaskWeighter().observe(["a"], [True, False], [0, 0])
