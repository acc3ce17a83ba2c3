"""The controller's use of group transforms and dynamic weighting, on hand-computed numbers."""

import pytest
import torch

from trainer.algorithms.weighting import TaskWeighter
from trainer.loop import Trainer


def test_sample_scope_scales_each_group_by_its_accuracy():
    # Two prompts of task "math", 4 completions each: group 0 is 2/4 correct, group 1 is 1/4.
    prompt_of = [0, 0, 0, 0, 1, 1, 1, 1]
    correct = [True, True, False, False, True, False, False, False]
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0, 1.5, -0.5, -0.5, -0.5])
    weighter = TaskWeighter("difficulty", {}, ema=0.5)
    weighted, metrics = weighter.weigh(advantages, ["math"] * 8, prompt_of, correct, "sample")
    # difficulty: 4 p (1 - p) -> group 0: 4 * 0.5 * 0.5 = 1.0; group 1: 4 * 0.25 * 0.75 = 0.75.
    assert weighted.tolist() == pytest.approx([1.0, 1.0, -1.0, -1.0, 1.125, -0.375, -0.375, -0.375])
    assert metrics["weighting/mean"] == pytest.approx((4 * 1.0 + 4 * 0.75) / 8)


def test_task_scope_uses_running_task_accuracy():
    weighter = TaskWeighter("difficulty", {}, ema=0.5)
    tasks, prompt_of = ["easy", "easy", "mid", "mid"], [0, 0, 1, 1]
    # easy: 2/2 correct (p = 1 -> raw weight 0); mid: 1/2 (p = 0.5 -> raw weight 1).
    weighted, metrics = weighter.weigh(torch.tensor([0.0, 0.0, 1.0, -1.0]), tasks, prompt_of,
                                       [True, True, True, False], "task")
    # Task weights are normalised to mean 1 over tasks: raw {0, 1} -> {0, 2}.
    assert metrics["weighting/task/easy"] == pytest.approx(0.0)
    assert metrics["weighting/task/mid"] == pytest.approx(2.0)
    assert weighted.tolist() == pytest.approx([0.0, 0.0, 2.0, -2.0])
    # A second step: easy's EMA accuracy 0.5 * 1 + 0.5 * 0.5 = 0.75 -> raw 0.75; mid stays 0.5 -> 1.
    weighter.weigh(torch.zeros(4), tasks, prompt_of, [True, False, True, False], "task")
    weights = weighter.task_weights()
    assert weights["easy"] == pytest.approx(0.75 * 2 / 1.75)
    assert weights["mid"] == pytest.approx(1.0 * 2 / 1.75)


@pytest.mark.slow
def test_in_process_steps_with_reference_transforms_and_weighting(tmp_path):
    from trainer.recipe_config import compose_config

    cfg = compose_config([
        f"trainer.output_dir={tmp_path}", "engine.ray=false", "rollout.engine=hf", "sft.steps=0",
        "data.num_train=32", "data.num_eval=4", "data.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=12",
        "actor.mini_batch_size=8", "actor.micro_batch_size=4", "algorithm.kl_coef=0.05", "reward.num_workers=0",
        "tracking.wandb.mode=disabled", "tracking.console=false",
        "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.1}]}",
        "reward.group_transforms={default: [{name: length_bonus, params: {coef: 1.0, min_group_score: 0.0}}]}",
        "reward.weighting.rule=difficulty", "reward.weighting.scope=task",
    ])
    trainer = Trainer(cfg)
    try:
        trainer.start_workers(trainer.base_model_path)
        assert trainer.workers.reference is not None, "kl_coef > 0 must create the reference worker"
        first, second = trainer.step(0), trainer.step(1)
    finally:
        trainer.close()
    for metrics in (first, second):
        # The base score (before the length bonus) is logged beside the transformed total.
        assert metrics["reward_terms/_base"] < metrics["reward/mean"]
        assert "weighting/mean" in metrics and "time/reference" in metrics
        assert metrics["actor/optimizer_steps"] == 2.0
    # Step 0 updates from the reference weights themselves: KL is exactly zero on its first mini-batch
    # and small after; by step 1 the policy has moved away from the reference.
    assert 0.0 <= first["actor/kl"] < second["actor/kl"]


def test_in_process_rewards_still_time_out_while_rated_beside_generation(tmp_path):
    # reward.num_workers=0 runs rewards in the controller, where only the main thread gets SIGALRM: the
    # collector rates there while a second thread receives the completions (trainer/collect.py).
    from trainer.recipe_config import compose_config
    from trainer.rollout.sampling import SamplingSpec

    cfg = compose_config([
        f"trainer.output_dir={tmp_path}", "engine.ray=false", "rollout.engine=hf", "sft.steps=0",
        "data.num_train=8", "data.num_eval=2", "data.prompts_per_step=2", "rollout.n=2", "rollout.max_new_tokens=4",
        "actor.mini_batch_size=4", "actor.micro_batch_size=4", "reward.num_workers=0", "reward.timeout_s=0.2",
        "tracking.wandb.mode=disabled", "tracking.console=false",
        "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_sleep', params: {seconds: 3.0}}]}",
    ])
    trainer = Trainer(cfg)
    try:
        trainer.start_workers(trainer.base_model_path)
        spec = SamplingSpec(n=1, temperature=0.0, max_new_tokens=4, stop_token_ids=trainer.prompts.chat.stop_ids)
        rollouts = trainer.collector.sample(trainer.train_samples[:2], spec)
    finally:
        trainer.close()
    assert rollouts.failures == {"tests.reward_fixtures:fixture_sleep/timeout": 2}
    assert [r.score for r in rollouts.items] == [0.0, 0.0]
