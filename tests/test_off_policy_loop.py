"""The newer losses, per-token advantages and the mismatch budget through the controller's step (HF engine,
in-process)."""

import pytest

from tests.test_loop_features import make_trainer
from trainer.mismatch import MismatchBudgetError

pytestmark = pytest.mark.slow


def test_per_token_advantages_sequence_loss_and_budget_through_the_step(tmp_path):
    # REINFORCE++ gives [B, T] advantages; GSPO trains on them over two mini-batches (old log-probs recomputed);
    # a tiny budget turns correction on after the first step (the HF engine and the actor differ by float noise).
    trainer = make_trainer(tmp_path, "algorithm.advantage=reinforce_plus_plus", "algorithm.policy_loss=gspo",
                           "algorithm.loss_agg=seq_mean_token_mean", "actor.mini_batch_size=4",
                           "actor.micro_batch_size=4", "algorithm.mismatch_budget=1e-12", "tracking.console=true")
    try:
        first = trainer.step(0)
        assert trainer.mismatch.correcting  # said once, from step 1 on
        second = trainer.step(1)
        state = trainer.mismatch.state_dict()
    finally:
        trainer.close()
    assert first["actor/optimizer_steps"] == 2.0 and 0 < first["logp_mismatch"] < 1e-3
    assert "actor/mismatch/kl" not in first and 0 <= second["actor/mismatch/kl"] < 1e-3
    assert second["actor/mismatch/is_weight_mean"] == pytest.approx(1.0, abs=1e-3)
    assert "actor/seq_ratio_mean" in second and state["correcting"] and len(state["recent"]) == 2


def test_the_budget_stops_the_run_naming_the_causes(tmp_path):
    trainer = make_trainer(tmp_path, "algorithm.mismatch_budget=1e-12", "algorithm.mismatch_action=stop",
                           "model.dtype=float32")
    try:
        with pytest.raises(MismatchBudgetError) as error:
            trainer.step(0)
    finally:
        trainer.close()
    message = str(error.value)
    assert "above algorithm.mismatch_budget=1e-12 (algorithm.mismatch_action=stop)" in message
    assert "model.dtype=float32" in message and "rollout engine (hf)" in message
