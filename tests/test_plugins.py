"""plugins.Registry's contract, and the worked examples of docs/plugins.md run as written there."""

import re
import textwrap
from pathlib import Path

import pytest
import torch

from plugins.registry import Registry
from trainer.batch import TrainBatch
from trainer.recipe_config import compose_config
from trainer.config import validate
from trainer.workers.actor import ActorWorker

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def double(x, *, times: int = 2, offset: float = 0.0):
    """x * times + offset."""
    return x * times + offset


# ---------------------------------------------------------------- the registry


def test_a_plugin_is_its_function_and_its_signature():
    things = Registry("thing", args=1)
    assert things.register("double")(double) is double  # the function stays as it was
    plugin = things.get("double")
    assert plugin(3) == 6 and plugin(3, times=3, offset=0.5) == 9.5
    assert plugin.fn is double and plugin.kind == "thing" and plugin.name == "double"
    assert plugin.params == {"times": 2, "offset": 0.0} and plugin.doc == "x * times + offset."
    assert not plugin.accepts_any_param
    assert things.names() == ["double"] and list(things) == ["double"] and "double" in things
    assert things["double"] is plugin and things.check("double", {"times": 5}) is plugin


def test_a_name_clash_is_refused_and_the_same_function_may_register_again():
    things = Registry("thing")
    things.register("double")(double)
    with pytest.raises(ValueError, match="thing 'double' is already registered by .*double"):
        things.register("double")(lambda x: x)
    # The same module imported under a second name registers its functions again: accepted.
    again = type(double)(double.__code__, {}, "double")
    again.__qualname__ = double.__qualname__
    things.register("double")(again)
    assert things.get("double").fn is again
    with pytest.raises(ValueError, match="non-empty string"):
        things.register("")


def test_a_function_that_cannot_take_the_kind_s_arguments_is_refused():
    with pytest.raises(TypeError, match="loss 'bad' must take 4 positional arguments, takes 1"):
        Registry("loss", args=4).register("bad")(double)


def test_an_unknown_name_lists_the_registered_ones_and_the_closest():
    things = Registry("advantage estimator")
    for name in ("grpo", "rloo"):
        things.register(name)(lambda rewards: rewards)
    with pytest.raises(KeyError) as error:
        things.get("grop")
    assert error.value.args[0] == "unknown advantage estimator 'grop'; registered: grpo, rloo (did you mean 'grpo'?)"
    with pytest.raises(KeyError) as error:
        things.get("zzz")
    assert error.value.args[0] == "unknown advantage estimator 'zzz'; registered: grpo, rloo"


def test_an_unknown_parameter_is_one_line_naming_kind_name_and_parameters():
    things = Registry("advantage estimator")
    things.register("grpo")(lambda rewards, group_index, *, epsilon=1e-6, norm_by_std=True: rewards)
    with pytest.raises(ValueError) as error:
        things.check("grpo", {"epsilom": 0.1})
    assert str(error.value) == ("advantage estimator 'grpo' has no parameter 'epsilom'; its parameters: "
                                "epsilon, norm_by_std (did you mean 'epsilon'?)")
    with pytest.raises(ValueError) as error:
        things.check("grpo", {"b": 1, "a": 2})
    assert str(error.value) == "advantage estimator 'grpo' has no parameters 'a', 'b'; its parameters: epsilon, norm_by_std"
    with pytest.raises(ValueError, match="parameters must be a mapping, got list"):
        things.check("grpo", ["epsilon"])
    things.register("any")(lambda rewards, **params: rewards)
    assert things.check("any", {"whatever": 1}).accepts_any_param


def test_validate_gets_the_values_the_function_will_run_with():
    seen = []

    def positive(params):
        seen.append(params)
        if params["times"] <= 0:
            raise ValueError("times must be > 0")

    things = Registry("thing")
    things.register("double", validate=positive, note="kept")(double)
    things.check("double", {"offset": 1.0})
    assert seen == [{"times": 2, "offset": 1.0}]  # defaults updated with the config
    with pytest.raises(ValueError, match="times must be > 0"):
        things.check("double", {"times": 0})
    assert things.get("double").extras == {"note": "kept"}


def test_a_dotted_path_loads_the_function_or_the_plugin_registered_for_it():
    ops = Registry("text op", args=2, dotted_paths=True)
    indent = ops.get("textwrap:indent")  # not registered: wrapped under its path
    assert indent.name == "textwrap:indent" and indent.params == {"predicate": None}
    assert indent("a\nb", "> ") == "> a\n> b" and ops.get("textwrap:indent") is indent
    assert ops.names() == [] and "textwrap:indent" not in ops  # loaded paths are not listed
    ops.register("shorten", validate=lambda params: None)(textwrap.shorten)
    assert ops.get("textwrap:shorten") is ops.get("shorten")  # the registered plug-in, validator included
    with pytest.raises(KeyError, match="cannot load text op 'textwrap:nope'"):
        ops.get("textwrap:nope")
    with pytest.raises(KeyError, match="unknown thing 'textwrap:indent'"):
        Registry("thing").get("textwrap:indent")  # a kind without dotted paths


# ---------------------------------------------------------------- docs/plugins.md, as written


def doc_snippet(index: int, **names) -> dict:
    """Run the index-th python block of docs/plugins.md; returns its namespace."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 3, "docs/plugins.md: an advantage, a policy loss, a reward"
    namespace = {"__name__": f"docs_plugins_{index}", **names}
    exec(compile(blocks[index], f"{DOC}, python block {index + 1}", "exec"), namespace)
    return namespace


def test_doc_an_advantage_estimator_is_one_function_and_one_name():
    names = doc_snippet(0)
    assert names["advantages"].tolist() == [1.0, -1.0, -1.0, 1.0]
    with pytest.raises(ValueError) as error:
        validate(names["typo"])
    assert str(error.value) == ("algorithm.advantage_params: advantage estimator 'batch_centred' has no parameter "
                                "'sacle'; its parameters: scale (did you mean 'scale'?)")


def test_doc_a_policy_loss_gets_its_hyperparameter_from_the_config(tiny_model_dir):
    names = doc_snippet(1, model_dir=tiny_model_dir)
    # On-policy every ratio is 1: -3 * (1*2 tokens - 0.5*1 token) / 3 tokens = -1.5.
    assert names["metrics"]["policy_loss"] == pytest.approx(-1.5, abs=1e-5)
    assert names["metrics"]["optimizer_steps"] == 1.0


def test_doc_a_reward_is_one_function_and_one_name():
    names = doc_snippet(2)
    assert names["batch"].scores == [0.5, 0.0]
    cfg = compose_config(["recipe=quickstart", "reward.tasks={default: [{name: short_answer, params: {budgte: 4}}]}"])
    with pytest.raises(ValueError) as error:
        validate(cfg)
    assert str(error.value) == ("reward.tasks: task 'default' term 0 (short_answer): reward 'short_answer' has no "
                                "parameter 'budgte'; its parameters: budget (did you mean 'budget'?)")


# ---------------------------------------------------------------- policy_loss_params in the actor


def actor_update(model_dir, *overrides):
    cfg = compose_config(["recipe=quickstart", "actor.threads=1", *overrides])
    validate(cfg)
    actor = ActorWorker(model_dir, actor=cfg.actor, algorithm=cfg.algorithm,
                        dtype="float32", seed=0, max_len=8)
    batch = TrainBatch.from_sequences([[2, 3], [4, 5]], [[6, 7], [8]], pad_id=0)
    batch.advantages = torch.tensor([1.0, -0.5])
    batch.old_logprobs = actor.log_probs(batch, 1.0)
    return actor.update(batch, 1.0)


def test_ppo_dual_clip_is_set_from_the_config(tiny_model_dir):
    plain = actor_update(tiny_model_dir)
    dual = actor_update(tiny_model_dir, "algorithm.policy_loss_params={dual_clip: 3.0}")
    assert "dual_clip_frac" not in plain and dual["dual_clip_frac"] == 0.0  # on-policy: no ratio reaches 3
    # On-policy ppo_clip is -A per token: -(1*2 - 0.5*1) / 3 tokens = -0.5, dual clip or not.
    assert plain["policy_loss"] == pytest.approx(-0.5, abs=1e-5) and dual["policy_loss"] == pytest.approx(-0.5, abs=1e-5)


def test_a_loss_without_a_clip_range_is_not_given_one(tiny_model_dir):
    # vanilla_pg takes no eps_low / eps_high: -A * logp, so its loss is the advantage-weighted NLL.
    metrics = actor_update(tiny_model_dir, "algorithm.policy_loss=vanilla_pg")
    assert metrics["clip_frac"] == 0.0 and metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("overrides, line", [
    (["algorithm.policy_loss_params={dual_clp: 3.0}"],
     "algorithm.policy_loss_params: policy loss 'ppo_clip' has no parameter 'dual_clp'; its parameters: dual_clip, "
     "eps_high, eps_low (did you mean 'dual_clip'?)"),
    (["algorithm.policy_loss_params={eps_high: 0.3}"],
     "algorithm.policy_loss_params: eps_high is set by algorithm.eps_high, not here"),
    (["algorithm.policy_loss=vanilla_pg", "algorithm.policy_loss_params={dual_clip: 3.0}"],
     "algorithm.policy_loss_params: policy loss 'vanilla_pg' has no parameter 'dual_clip'; its parameters: none"),
    (["algorithm.kl_estimator=k4"], "algorithm.kl_estimator: unknown KL estimator 'k4'; registered: k1, k2, k3"),
    (["algorithm.loss_agg=token_sum"], "algorithm.loss_agg: unknown loss aggregation 'token_sum'; registered: "
     "seq_mean_token_mean, seq_mean_token_sum, seq_mean_token_sum_norm, token_mean (did you mean 'token_mean'?)"),
    (["reward.weighting.rule=difficulty", "reward.weighting.params={sigma: 0.2}"],
     "reward.weighting.params: weighting rule 'difficulty' has no parameter 'sigma'; its parameters: floor"),
    (["reward.group_transforms={default: [{name: overlong_penalty, params: {max_len: 10, buffer: 20}}]}"],
     "reward.group_transforms: group_transforms task 'default' entry 0 (overlong_penalty): overlong_penalty: "
     "buffer must be <= max_len"),
    (["reward.weighting.rule=difficulty", "reward.weighting.ema=1.0"],
     "reward.weighting.ema=1.0: expected a value in [0, 1)"),  # once read by --check through TaskWeighter
    (["data.preprocess=gsm9k"], "data.preprocess: unknown dataset preprocessor 'gsm9k'; registered: gsm8k, "
     "healthbench, math, mmath, polymath (did you mean 'gsm8k'?)"),
])
def test_validate_names_the_config_key(overrides, line):
    with pytest.raises(ValueError) as error:
        validate(compose_config(["recipe=quickstart", *overrides]))
    assert str(error.value) == line
