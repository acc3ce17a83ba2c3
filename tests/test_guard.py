"""The numerical guard: a non-finite loss, gradient norm or advantage skips the optimiser step with the
weights and optimiser state untouched, says which mini-batch and why, and stops the run after
`trainer.max_skipped_steps` such steps in a row. NaN is injected through registered plug-ins."""

from __future__ import annotations

import json

import pytest
import torch

from trainer.algorithms.advantages import ADVANTAGES
from trainer.algorithms.policy_loss import POLICY_LOSSES, ppo_clip
from trainer.rollout import ENGINES
from trainer.strategies.base import TorchStrategy

CALLS = {"loss": 0}


def nan_loss(logp, inputs, *, nan_from: int = 0, nan_count: int = 1):
    """ppo_clip, made NaN on calls nan_from .. nan_from + nan_count - 1 (0-based, counted in this process)."""
    call = CALLS["loss"]
    CALLS["loss"] += 1
    loss, metrics = ppo_clip(logp, inputs)
    return (loss * float("nan") if nan_from <= call < nan_from + nan_count else loss), metrics


def nan_advantage(rewards, group_index, response_mask):
    out = rewards - rewards.mean()
    out[0] = float("inf")
    return out


def nan_logprob_engine(model_path, *, dtype, seed, tokenizer=None):
    """The HF engine, reporting a NaN log-prob on the first token of every third completion."""
    from trainer.rollout.hf_engine import HFEngine

    class NanEngine(HFEngine):
        def generate(self, prompts, spec, indices=None, media=None):
            out = super().generate(prompts, spec, indices, media)
            for completion in out[::3]:
                completion.logprobs[0] = float("nan")
            return out

    return NanEngine(model_path, dtype=dtype, seed=seed)


@pytest.fixture(autouse=True, scope="module")
def _fault_plugins():
    """The NaN-injecting plug-ins, registered for this module's tests only (other tests list the registries)."""
    plugins = [(POLICY_LOSSES, "test_nan_loss", nan_loss), (ADVANTAGES, "test_nan_advantage", nan_advantage),
               (ENGINES, "test_nan_logprobs", nan_logprob_engine)]
    for registry, name, fn in plugins:
        registry.register(name)(fn)
    yield
    for registry, name, _ in plugins:
        registry.unregister(name)


def test_strategy_skips_a_non_finite_gradient_and_keeps_its_state():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    strategy = TorchStrategy(model, lr=0.1, weight_decay=0.0, betas=(0.9, 0.999), warmup_steps=2, fused=False)
    model(torch.ones(1, 4)).sum().backward()
    assert strategy.optimizer_step(1.0) > 0  # one real step: optimiser moments exist
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {k: v.clone() for k, v in strategy.optimizer.state[model.weight].items()}
    schedule = strategy.scheduler.state_dict()
    (model(torch.ones(1, 4)).sum() * float("nan")).backward()
    assert torch.isnan(torch.tensor(strategy.optimizer_step(1.0)))
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(moments[k], v) for k, v in strategy.optimizer.state[model.weight].items())
    assert strategy.scheduler.state_dict() == schedule and model.weight.grad is None


BASE = [
    "engine.ray=false", "rollout.engine=hf", "sft.steps=0", "data.num_train=64", "data.num_eval=4",
    "data.prompts_per_step=4", "rollout.n=2", "rollout.max_new_tokens=8", "rollout.eval_max_new_tokens=8",
    "actor.mini_batch_size=8", "actor.micro_batch_size=8", "reward.num_workers=0", "tracking.wandb.mode=disabled",
    "tracking.console=false", "trainer.save_every=0",
    "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.1}]}",
]


def weights_of(trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.workers.actor.call("weights")[0].items()}


@pytest.mark.slow
def test_a_nan_loss_skips_one_step_and_training_goes_on(tmp_path, capsys):
    from trainer.loop import Trainer
    from trainer.recipe_config import compose_config

    CALLS["loss"] = 0
    trainer = Trainer(compose_config([f"trainer.output_dir={tmp_path}", *BASE, "algorithm.policy_loss=test_nan_loss",
                                      "algorithm.policy_loss_params={nan_from: 1, nan_count: 1}"]))
    trainer.start_workers(trainer.base_model_path)
    try:
        history, snapshots = [], [weights_of(trainer)]
        for step in range(3):
            history.append(trainer.step(step))
            snapshots.append(weights_of(trainer))
    finally:
        trainer.close()
    assert [m["guard/skipped_update"] for m in history] == [0.0, 1.0, 0.0]
    assert [m["actor/optimizer_steps"] for m in history] == [1.0, 0.0, 1.0]
    assert all(torch.equal(snapshots[2][k], v) for k, v in snapshots[1].items())  # the NaN step changed nothing
    assert not all(torch.equal(snapshots[3][k], v) for k, v in snapshots[2].items())  # the next one trains
    assert all(torch.isfinite(v).all() for v in snapshots[3].values())
    out = capsys.readouterr().out
    assert "[guard] step 2: optimiser step skipped, weights unchanged: epoch 0 mini-batch 0: gradient norm nan" in out
    assert "loss not finite in micro-batches [0]" in out


@pytest.mark.slow
def test_nan_losses_in_a_row_stop_the_run_with_the_last_good_weights(tmp_path):
    from trainer.loop import train
    from trainer.recipe_config import compose_config

    CALLS["loss"] = 0
    cfg = compose_config([f"trainer.output_dir={tmp_path}", *BASE, "algorithm.policy_loss=test_nan_loss",
                          "algorithm.policy_loss_params={nan_from: 1, nan_count: 100}", "trainer.total_steps=6",
                          "trainer.max_skipped_steps=2"])
    with pytest.raises(FloatingPointError, match=r"2 RL steps in a row \(to step 3\).*weights are those of step 1"):
        train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    trained = [r["step"] for r in rows if "guard/skipped_update" in r]
    assert trained == [1, 2, 3]  # each step once, none after the stop
    assert [r["guard/skipped_update"] for r in rows if "guard/skipped_update" in r] == [0.0, 1.0, 1.0]


@pytest.mark.slow
def test_completions_with_non_finite_rollout_logprobs_are_dropped_and_counted(tmp_path):
    from trainer.loop import Trainer
    from trainer.recipe_config import compose_config

    trainer = Trainer(compose_config([f"trainer.output_dir={tmp_path}", *BASE, "rollout.engine=test_nan_logprobs",
                                      "actor.mini_batch_size=8", "actor.micro_batch_size=2"]))
    trainer.start_workers(trainer.base_model_path)
    try:
        metrics = trainer.step(0)
        after = weights_of(trainer)
    finally:
        trainer.close()
    # 8 completions, NaN in completions 0, 3 and 6: 5 train, the update stays finite.
    assert metrics["guard/dropped_nonfinite_logprobs"] == 3.0 and metrics["batch/kept_completions"] == 5.0
    assert metrics["actor/optimizer_steps"] == 1.0 and metrics["guard/skipped_update"] == 0.0
    assert all(torch.isfinite(v).all() for v in after.values())


@pytest.mark.slow
def test_non_finite_advantages_skip_the_update(tmp_path, capsys):
    from trainer.loop import Trainer
    from trainer.recipe_config import compose_config

    trainer = Trainer(compose_config([f"trainer.output_dir={tmp_path}", *BASE,
                                      "algorithm.advantage=test_nan_advantage"]))
    trainer.start_workers(trainer.base_model_path)
    try:
        before = weights_of(trainer)
        metrics = trainer.step(0)
        after = weights_of(trainer)
    finally:
        trainer.close()
    assert metrics["guard/nonfinite_advantages"] == 1.0 and metrics["guard/skipped_update"] == 1.0
    assert metrics["batch/kept_completions"] == 0.0
    assert all(torch.equal(before[k], v) for k, v in after.items())
    assert "[guard] step 1: 1 non-finite advantages (test_nan_advantage); update skipped" in capsys.readouterr().out


def failing_judge():
    """A real HTTP judge endpoint that answers every request with 503 (an overloaded or broken server)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from rewards.judge_server import serve_in_background

    async def down(request):
        return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)

    return serve_in_background(app=Starlette(routes=[Route("/v1/chat/completions", down, methods=["POST"])]))


def judged(url: str, weight: float = 0.5) -> str:
    return ("reward.tasks={rubric: [{name: rubric_checks, weight: 1.0}, {name: rubric, weight: " + str(weight)
            + ", params: {base_url: '" + url + "', model: judge, max_retries: 1, backoff_s: 0.01, timeout_s: 5}}]}")


JUDGED = [*BASE[:-1], "data.train=synthetic:rubric_short_answers", "reward.accuracy_reward=rubric_checks"]


@pytest.mark.slow
def test_a_judge_that_is_down_is_counted_named_and_stops_the_run(tmp_path, capsys):
    from trainer.loop import train
    from trainer.recipe_config import compose_config
    from trainer.scoring import RewardFailureError

    url, stop = failing_judge()
    try:
        with pytest.raises(RewardFailureError, match=r"rubric/error failed on 8 of 8 completions .* judge at "
                                                      + url.replace(".", r"\.") + " gave no reply"):
            train(compose_config([f"trainer.output_dir={tmp_path}", *JUDGED, judged(url), "trainer.total_steps=3"]))
    finally:
        stop()
    # It stopped at the first step's scores: nothing was trained on them.
    rows = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"reward/mean"' in line]
    assert rows == [] and not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_a_judge_failing_below_the_limit_is_a_warning_and_a_metric(tmp_path, capsys):
    from trainer.loop import train
    from trainer.recipe_config import compose_config

    url, stop = failing_judge()
    try:
        train(compose_config([f"trainer.output_dir={tmp_path}", *JUDGED, judged(url), "trainer.total_steps=2",
                              "reward.max_failure_frac=1.0"]))
    finally:
        stop()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in trained] == [1, 2] and all(r["reward_failures/rubric/error"] == 8 for r in trained)
    assert f"[reward] step 2: rubric/error failed on 8 of 8 completions (scored 0): judge at {url}" in capsys.readouterr().out


@pytest.mark.slow
def test_killed_workers_rollout_and_reference_replaced_actor_resumed_same_run_as_unbroken(tmp_path, capsys):
    """SIGKILL the rollout engine (step 1), the reference (step 2) and the actor (step 3) of a 3-step run:
    the first two are replaced in the run, the actor's death exits 3 with the resume command, and the
    resumed run ends with the same per-step metrics as an unbroken one."""
    import shlex

    import ray

    from tests import reward_fixtures
    from trainer.__main__ import main

    # A Ray an earlier test started (2 CPUs) cannot seat three roles in groups of their own: let the run size it.
    ray.shutdown()
    ray_args = [*[o for o in BASE if o != "engine.ray=false"][:-1], "engine.ray=true", "algorithm.kl_coef=0.05",
                "trainer.total_steps=3", "trainer.save_every=1"]
    # Reward calls: 4 for the evaluation before RL, then 8 per step: 6 is in step 1, 14 in step 2, 22 in step 3.
    kills = "{kills: {at6: RolloutWorker, at14: ReferenceWorker, at22: ActorWorker}}"
    tasks = ("reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.1}, "
             "{name: 'tests.reward_fixtures:fixture_kill_worker', weight: 0.0, params: " + kills + "}]}")
    straight = tasks.replace(kills, "{kills: {}}")
    # The unbroken run in-process: it gives the Ray run's metrics to the bit, 15 s sooner.
    assert main([f"trainer.output_dir={tmp_path / 'straight'}", *ray_args, straight, "engine.ray=false"]) == 0
    reward_fixtures.CALLS["kill"] = 0
    args = [f"trainer.output_dir={tmp_path / 'broken'}", *ray_args, tasks]
    assert main(args) == 3
    captured = capsys.readouterr()
    assert "[recovery] rollout worker died during" in captured.out and "(1 of trainer.max_worker_restarts=3)" in captured.out
    assert "[recovery] reference worker died during 'log_probs'" in captured.out and "(2 of" in captured.out
    assert "error: actor worker died during" in captured.err
    command = captured.err.split("resume from the last checkpoint with: ")[1].strip()
    assert shlex.split(command)[:3] == ["python", "-m", "trainer"] and command.endswith("trainer.resume=auto")
    assert main(shlex.split(command)[3:]) == 0

    def per_step(folder):
        rows = [json.loads(line) for line in (tmp_path / folder / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r for r in rows if "reward/mean" in r}  # the last line of a step stands

    broken, unbroken = per_step("broken"), per_step("straight")
    assert sorted(broken) == sorted(unbroken) == [1, 2, 3]
    for key in ("reward/mean", "response_len/sum", "actor/policy_loss", "actor/grad_norm", "actor/kl"):
        assert [broken[s][key] for s in range(1, 4)] == [unbroken[s][key] for s in range(1, 4)], key
    assert [broken[s]["workers/restarts"] for s in (1, 2)] == [1.0, 2.0]
    lines = (tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()
    assert sum('"reward/mean"' in line for line in lines) == 3  # step 3 died before it was logged: none twice
    ray.shutdown()  # the runs' local Ray: a later test starts a head of its own


@pytest.mark.slow
def test_a_patient_simulator_that_is_down_is_counted_and_named(tmp_path, capsys):
    from trainer.loop import Trainer, train
    from trainer.recipe_config import compose_config
    from trainer.scoring import RewardFailureError

    url, stop = failing_judge()
    dialogue = [f"rollout.multiturn.turns=2", f"rollout.multiturn.simulator_url={url}",
                "rollout.multiturn.simulator_timeout_s=5"]
    try:
        trainer = Trainer(compose_config([f"trainer.output_dir={tmp_path / 'a'}", *BASE, *dialogue,
                                          "reward.max_failure_frac=1.0"]))
        trainer.start_workers(trainer.base_model_path)
        try:
            metrics = trainer.step(0)
        finally:
            trainer.close()
        assert metrics["reward_failures/simulator/error"] == 8.0 and metrics["batch/kept_completions"] == 8.0
        assert f"[reward] step 1: simulator/error failed on 8 of 8 completions (scored 0): patient simulator at {url}" \
            in capsys.readouterr().out
        with pytest.raises(RewardFailureError, match="simulator/error failed on 8 of 8"):
            train(compose_config([f"trainer.output_dir={tmp_path / 'b'}", *BASE, *dialogue, "trainer.total_steps=2"]))
    finally:
        stop()
