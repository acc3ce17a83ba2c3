"""Rollout-mismatch correction: weights and rejection by hand, then in the actor's update (decoupled and
bypass modes), then the mismatch budget."""

import math

import pytest
import torch

from trainer.algorithms.rollout_correction import correct_mismatch, correction_weights, rejection_mask
from trainer.batch import TrainBatch
from trainer.config import RolloutCorrectionConfig, validate
from trainer.mismatch import MismatchBudget, MismatchBudgetError
from trainer.recipe_config import compose_config
from trainer.workers.actor import ActorWorker

# pi_old / pi_rollout per token: row 0 [3, 0.5], row 1 [1.5, (padding)].
RATIOS = torch.tensor([[3.0, 0.5], [1.5, 1.0]])
LOG_RATIO = RATIOS.log()
MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0]])


def close(a, b, tol=1e-5):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32),
                               atol=tol, rtol=tol)


def test_truncated_importance_weights():
    close(correction_weights(LOG_RATIO, MASK, level="token", cap=2.0), [[2.0, 0.5], [1.5, 0.0]])
    # sequence: the product of the row's ratios, 3 * 0.5 = 1.5 and 1.5, on every token of the row
    close(correction_weights(LOG_RATIO, MASK, level="sequence", cap=2.0), [[1.5, 1.5], [1.5, 0.0]])
    close(correction_weights(LOG_RATIO, MASK, level="sequence", cap=1.2), [[1.2, 1.2], [1.2, 0.0]])
    with pytest.raises(ValueError, match="token, sequence"):
        correction_weights(LOG_RATIO, MASK, level="seq", cap=2.0)


def test_rejection_outside_the_band():
    # token band [0.6, 2]: 3 and 0.5 out, 1.5 in
    close(rejection_mask(LOG_RATIO, MASK, level="token", low=0.6, high=2.0), [[0.0, 0.0], [1.0, 0.0]])
    # sequence: geometric means sqrt(1.5) = 1.2247 and 1.5; band [0.6, 1.3] keeps row 0 only
    close(rejection_mask(LOG_RATIO, MASK, level="sequence", low=0.6, high=1.3), [[1.0, 1.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="must hold 1"):
        rejection_mask(LOG_RATIO, MASK, level="token", low=1.1, high=2.0)


def test_correct_mismatch_returns_weights_mask_and_token_sums():
    cfg = RolloutCorrectionConfig(weights="token", weight_cap=2.0, reject="token", reject_low=0.6, reject_high=2.0)
    weights, loss_mask, sums = correct_mismatch(LOG_RATIO, MASK, cfg)
    close(weights, [[2.0, 0.5], [1.5, 0.0]])
    close(loss_mask, [[0.0, 0.0], [1.0, 0.0]])
    # k3 = r - 1 - ln r: 3 -> 0.901388, 0.5 -> 0.193147, 1.5 -> 0.094535; |ln r|: 1.098612 + 0.693147 + 0.405465
    assert sums == pytest.approx({"mismatch/kl": 1.189070, "mismatch/abs_log_ratio": 2.197225,
                                  "mismatch/is_weight_mean": 4.0, "mismatch/rejected_frac": 2.0}, abs=1e-5)
    weights, loss_mask, sums = correct_mismatch(LOG_RATIO, MASK, cfg, apply_weights=False)
    assert weights is None and "mismatch/is_weight_mean" not in sums


# ---------------------------------------------------------------- in the actor


def actor_and_batch(model_dir, *overrides):
    """An actor and a 2-row batch (3 response tokens) whose rollout log-probs are the actor's minus ln RATIOS."""
    cfg = compose_config(["recipe=quickstart", "actor.threads=1", *overrides])
    validate(cfg)
    actor = ActorWorker(model_dir, actor=cfg.actor, algorithm=cfg.algorithm, dtype="float32", seed=0, max_len=8)
    batch = TrainBatch.from_sequences([[2, 3], [4, 5]], [[6, 7], [8]], pad_id=0)
    batch.advantages = torch.tensor([1.0, -0.5])
    batch.rollout_logprobs = actor.log_probs(batch, 1.0) - LOG_RATIO * batch.response_mask
    return actor, batch


def test_decoupled_correction_weights_the_on_policy_loss(tiny_model_dir):
    # On-policy ppo_clip is -A per token; token weights [2, 0.5 | 1.5]:
    # token_mean = -(1 * 2 + 1 * 0.5 - 0.5 * 1.5) / 3 = -0.583333.
    actor, batch = actor_and_batch(tiny_model_dir, "algorithm.rollout_correction.mode=decoupled")
    metrics = actor.update(batch, 1.0, correct=True)
    assert metrics["policy_loss"] == pytest.approx(-1.75 / 3, abs=1e-5)
    assert metrics["mismatch/is_weight_mean"] == pytest.approx(4.0 / 3, abs=1e-5)
    assert metrics["mismatch/kl"] == pytest.approx(1.189070 / 3, abs=1e-5)
    assert metrics["logp_mismatch"] == pytest.approx((math.log(3) + math.log(2) + math.log(1.5)) / 3, abs=1e-5)
    # Without `correct` the same batch trains on the plain loss: -(1 + 1 - 0.5) / 3 = -0.5.
    actor, batch = actor_and_batch(tiny_model_dir)
    metrics = actor.update(batch, 1.0)
    assert metrics["policy_loss"] == pytest.approx(-0.5, abs=1e-5) and "mismatch/kl" not in metrics


def test_rejected_tokens_leave_the_loss(tiny_model_dir):
    # Band [0.6, 2] rejects the row-0 tokens (ratios 3, 0.5); the row-1 token keeps weight 1.5:
    # -(-0.5 * 1.5) / 3 tokens = 0.25 (the normaliser stays the mini-batch's token count).
    actor, batch = actor_and_batch(tiny_model_dir, "algorithm.rollout_correction.mode=decoupled",
                                   "algorithm.rollout_correction.reject=token",
                                   "algorithm.rollout_correction.reject_low=0.6")
    metrics = actor.update(batch, 1.0, correct=True)
    assert metrics["policy_loss"] == pytest.approx(0.25, abs=1e-5)
    assert metrics["mismatch/rejected_frac"] == pytest.approx(2 / 3, abs=1e-6)


def test_bypass_mode_takes_the_ratio_over_the_rollout_log_probs(tiny_model_dir):
    # Old log-probs are the rollout's: ratio = pi / pi_rollout = RATIOS, clipped to [0.8, 1.2]:
    # A=+1: r=3 -> -1.2, r=0.5 -> max(-0.5, -0.8) = -0.5; A=-0.5: r=1.5 -> max(0.75, 0.6) = 0.75.
    # token_mean (-1.2 - 0.5 + 0.75) / 3 = -0.316667; no weights on top (the ratio is the correction).
    actor, batch = actor_and_batch(tiny_model_dir, "algorithm.rollout_correction.mode=bypass",
                                   "algorithm.eps_low=0.2", "algorithm.eps_high=0.2")
    metrics = actor.update(batch, 1.0)
    assert metrics["policy_loss"] == pytest.approx(-0.95 / 3, abs=1e-5)
    # only r=3 is clipped (the others sit on the pessimistic, unclipped side)
    assert metrics["clip_frac"] == pytest.approx(1 / 3, abs=1e-6) and "mismatch/is_weight_mean" not in metrics
    # Bypass needs no old log-prob pass even for several optimiser steps.
    actor, batch = actor_and_batch(tiny_model_dir, "algorithm.rollout_correction.mode=bypass", "actor.epochs=2")
    assert actor.update(batch, 1.0)["optimizer_steps"] == 2.0


def test_correction_config_is_checked_up_front():
    for override, line in [
        ("algorithm.rollout_correction.mode=on", "algorithm.rollout_correction.mode='on': expected off, decoupled or bypass"),
        ("algorithm.rollout_correction.reject=seq", "algorithm.rollout_correction.reject='seq': expected token, sequence or null"),
        ("algorithm.rollout_correction.reject_low=1.5", "algorithm.rollout_correction.reject_low=1.5: expected a value in (0, 1]"),
        ("algorithm.mismatch_budget=0", "algorithm.mismatch_budget=0.0: expected a value in (0, inf)"),
        ("algorithm.mismatch_action=warn", "algorithm.mismatch_action='warn': expected correct or stop"),
    ]:
        with pytest.raises(ValueError) as error:
            validate(compose_config(["recipe=quickstart", override]))
        assert str(error.value) == line
    with pytest.raises(ValueError, match="cannot be combined with algorithm.old_logprobs=recompute"):
        validate(compose_config(["recipe=quickstart", "algorithm.rollout_correction.mode=bypass",
                                 "algorithm.old_logprobs=recompute"]))


# ---------------------------------------------------------------- the budget


def test_budget_turns_correction_on_once_the_running_mean_exceeds_it():
    budget = MismatchBudget(0.1, "correct")
    assert budget.observe(0.05) is None and budget.observe(float("nan")) is None  # nan: no measurement
    line = budget.observe(0.2)  # running mean (0.05 + 0.2) / 2 = 0.125 > 0.1
    assert budget.correcting and "averaged 0.125 per token over the last 2 steps" in line
    assert budget.observe(0.3) is None  # said once
    restored = MismatchBudget(0.1, "correct")
    restored.load_state_dict(budget.state_dict())
    assert restored.correcting and restored.recent == [0.05, 0.2, 0.3]


def test_budget_window_and_stop_message():
    budget = MismatchBudget(1.0)
    for value in [9.0, 0.0, 0.0, 0.0, 0.0]:
        budget.observe(value)  # the running mean of 9 and four 0s is 1.8
    assert budget.correcting
    budget = MismatchBudget(2.0)
    for value in [2.0, 0.0, 0.0, 0.0, 0.0, 0.0]:
        budget.observe(value)  # 2 is within the budget, then it leaves the 5-step window
    assert budget.recent == [0.0] * 5 and not budget.correcting
    stop = MismatchBudget(0.1, "stop", causes="model.dtype=bfloat16 (...)")
    with pytest.raises(MismatchBudgetError) as error:
        stop.observe(0.3)
    assert str(error.value) == ("the rollout/trainer log-prob mismatch averaged 0.3 per token over the last 1 steps, "
                                "above algorithm.mismatch_budget=0.1 (algorithm.mismatch_action=stop). "
                                "Likely causes: model.dtype=bfloat16 (...)")
    assert MismatchBudget(None).observe(5.0) is None
