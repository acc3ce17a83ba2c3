"""The actor's update: micro-batching changes nothing, and the update moves log-probs the way advantages say."""


import pytest
import torch

from trainer.batch import TrainBatch
from trainer.config import ActorConfig, AlgorithmConfig
from trainer.workers.actor import ActorWorker

PROMPTS = [[2, 3, 11, 4], [5, 11, 6], [2, 3, 11, 4], [5, 11, 6]]
RESPONSES = [[15, 7, 8, 20, 14], [15, 9, 14], [15, 1, 20, 14], [15, 2, 2, 2, 14]]


def make_actor(model_dir, micro, mini=4, agg="token_mean", kl_coef=0.0, lr=1e-2):
    actor = ActorConfig(lr=lr, mini_batch_size=mini, micro_batch_size=micro, threads=1)
    algorithm = AlgorithmConfig(loss_agg=agg, kl_coef=kl_coef)
    return ActorWorker(model_dir, actor=actor, algorithm=algorithm, dtype="float32", seed=0, max_len=8)


def make_batch(actor, advantages):
    batch = TrainBatch.from_sequences(PROMPTS, RESPONSES, pad_id=14)
    batch.advantages = torch.tensor(advantages)
    batch.old_logprobs = actor.log_probs(batch, 1.0)
    batch.ref_logprobs = batch.old_logprobs.clone()
    return batch


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_micro_batching_gives_the_same_update(tiny_model_dir, agg):
    results = []
    for micro in (4, 2, 1):
        actor = make_actor(tiny_model_dir, micro, agg=agg)
        metrics = actor.update(make_batch(actor, [1.0, -1.0, 0.5, -0.5]), 1.0)
        results.append((actor.weights(), metrics))
    (_, ref_metrics), *others = results
    # Loss and pre-clip gradient norm are computed before the optimiser step; Adam's first step
    # is about lr * sign(grad), so weights would amplify float noise in near-zero gradients.
    for _, metrics in others:
        assert metrics["policy_loss"] == pytest.approx(ref_metrics["policy_loss"], abs=1e-6)
        assert metrics["grad_norm"] == pytest.approx(ref_metrics["grad_norm"], rel=1e-5)
        assert metrics["entropy"] == pytest.approx(ref_metrics["entropy"], rel=1e-5)


def test_first_update_is_on_policy_and_follows_advantages(tiny_model_dir):
    actor = make_actor(tiny_model_dir, micro=2, lr=5e-3)
    batch = make_batch(actor, [1.0, -1.0, 1.0, -1.0])
    metrics = actor.update(batch, 1.0)
    # Old log-probs come from the same weights: ratio 1, nothing clipped, zero approx KL.
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["clip_frac"] == 0.0
    assert metrics["approx_kl"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["optimizer_steps"] == 1.0
    after = actor.log_probs(batch, 1.0)
    mask = batch.response_mask
    change = ((after - batch.old_logprobs) * mask).sum(1) / mask.sum(1)
    assert change[0] > 0 and change[2] > 0, "positive advantage should raise the sequence's log-prob"
    assert change[1] < 0 and change[3] < 0, "negative advantage should lower it"


def test_mini_batches_make_several_optimizer_steps(tiny_model_dir):
    actor = make_actor(tiny_model_dir, micro=1, mini=2)
    metrics = actor.update(make_batch(actor, [1.0, -1.0, 0.5, -0.5]), 1.0)
    assert metrics["optimizer_steps"] == 2.0
    # The second mini-batch sees weights moved by the first, so its ratios leave 1.
    assert metrics["ratio_mean"] != pytest.approx(1.0, abs=1e-7)


def test_kl_term_reports_zero_against_identical_reference(tiny_model_dir):
    actor = make_actor(tiny_model_dir, micro=4, kl_coef=0.1)
    metrics = actor.update(make_batch(actor, [1.0, -1.0, 0.5, -0.5]), 1.0)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-7)


def test_update_without_old_logprobs_equals_the_recomputed_ones(tiny_model_dir):
    """One optimiser step: the update's own forward, detached, is the old log-probs (no separate pass)."""
    given, own = make_actor(tiny_model_dir, micro=2), make_actor(tiny_model_dir, micro=2)
    advantages = [1.0, -1.0, 0.5, -0.5]
    with_old = make_batch(given, advantages)
    without = make_batch(own, advantages)
    without.old_logprobs = None
    # The engine's log-probs 0.25 below the actor's on every response token: the update reports that gap.
    without.rollout_logprobs = (with_old.old_logprobs - 0.25) * with_old.response_mask
    a, b = given.update(with_old, 1.0), own.update(without, 1.0)
    for key in ("policy_loss", "grad_norm", "entropy", "ratio_mean"):
        assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    assert b["logp_mismatch"] == pytest.approx(0.25, abs=1e-6) and "logp_mismatch" not in a
    for name, tensor in given.weights().items():
        torch.testing.assert_close(own.weights()[name], tensor, atol=1e-6, rtol=0)


def test_an_update_of_several_steps_needs_old_logprobs(tiny_model_dir):
    actor = make_actor(tiny_model_dir, micro=2, mini=2)
    batch = make_batch(actor, [1.0, -1.0, 0.5, -0.5])
    batch.old_logprobs = None
    with pytest.raises(ValueError, match="several optimiser steps needs the batch's old log-probs"):
        actor.update(batch, 1.0)
