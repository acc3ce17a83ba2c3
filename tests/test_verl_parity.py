"""The newer losses, estimators and rollout correction against verl 0.9.1's pure functions, to 1e-5.

tests/fixtures/verl_core_algos/expected.json holds random inputs (with garbage in the padding) and verl's
outputs on them: the loss, its gradient with respect to the current log-probs and the clip fractions.
make_expected.py beside it made the file (verl is not a dependency). docs/algorithms.md lists the
deliberate differences; the parameter mapping below is where they show.
"""

import json
from pathlib import Path

import pytest
import torch

from trainer.algorithms import aggregate, get_advantage, get_policy_loss
from trainer.algorithms.policy_loss import PolicyInputs
from trainer.algorithms.rollout_correction import correction_weights, rejection_mask

EXPECTED = json.loads((Path(__file__).parent / "fixtures" / "verl_core_algos" / "expected.json").read_text())
CASES = EXPECTED["cases"]
TOL = dict(atol=1e-5, rtol=1e-5)

# case -> (loss, its parameters, loss_agg, {verl metric: ours}). verl's "vanilla" always applies dual clip
# (clip_ratio_c, default 3); ours only with dual_clip set. verl's geo_mean ignores its loss_agg_mode and takes
# the mean over sequences, which is our seq_mean_token_mean of a loss put on every token of the sequence.
LOSSES = {
    "vanilla_dual_clip": ("ppo_clip", dict(eps_low=0.2, eps_high=0.28, dual_clip=3.0), "token_mean",
                          {"pg_clipfrac": "clip_frac", "pg_clipfrac_lower": "dual_clip_frac"}),
    "vanilla_seq_mean": ("ppo_clip", dict(eps_low=0.2, eps_high=0.2, dual_clip=3.0), "seq_mean_token_mean",
                         {"pg_clipfrac": "clip_frac", "pg_clipfrac_lower": "dual_clip_frac"}),
    "vanilla_sum_norm": ("ppo_clip", dict(eps_low=0.2, eps_high=0.2, dual_clip=3.0), "seq_mean_token_sum_norm",
                         {"pg_clipfrac": "clip_frac"}),
    "gspo": ("gspo", dict(eps_low=3e-4, eps_high=4e-4), "seq_mean_token_mean", {"pg_clipfrac": "clip_frac"}),
    "gspo_token_mean": ("gspo", dict(eps_low=3e-4, eps_high=4e-4), "token_mean", {"pg_clipfrac": "clip_frac"}),
    "cispo": ("cispo", dict(eps_low=0.2, eps_high=0.28), "token_mean", {"pg_clipfrac": "clip_frac"}),
    "sapo": ("sapo", dict(tau_pos=1.0, tau_neg=1.05), "seq_mean_token_mean", {}),
    "sapo_sharp": ("sapo", dict(tau_pos=2.0, tau_neg=4.0), "seq_mean_token_mean", {}),
    "gmpo": ("gmpo", dict(eps_low=0.4, eps_high=0.4), "seq_mean_token_mean",
             {"pg_clipfrac": "clip_frac", "pg_clipfrac_lower": "clip_frac_low"}),
    "dppo_tv": ("dppo_tv", dict(eps_low=0.05, eps_high=0.05, truncate=20.0), "token_mean",
                {"pg_clipfrac": "clip_frac", "pg_clipfrac_lower": "truncated_frac"}),
    "dppo_kl": ("dppo_kl", dict(eps_low=0.01, eps_high=0.02, truncate=1.5), "token_mean",
                {"pg_clipfrac": "clip_frac", "pg_clipfrac_lower": "truncated_frac"}),
}

# case -> (estimator, its parameters); verl returns [B, T], zero on padding.
ESTIMATORS = {
    "grpo_passk": ("grpo_passk", {}),
    "grpo_passk_no_std": ("grpo_passk", {"norm_by_std": False}),
    "reinforce_plus_plus": ("reinforce_plus_plus", {"gamma": 1.0}),
    "reinforce_plus_plus_gamma": ("reinforce_plus_plus", {"gamma": 0.9}),
    "reinforce_plus_plus_baseline": ("reinforce_plus_plus_baseline", {}),
    "grpo": ("grpo", {}),
    "rloo": ("rloo", {}),
}


def tensors(case):
    return {k: torch.tensor(v) for k, v in case["inputs"].items()}


def test_the_fixture_covers_every_mapping():
    assert EXPECTED["verl"] == "0.9.1" and len(CASES) == 3
    for case in CASES:
        assert set(case["losses"]) == set(LOSSES) and set(case["estimators"]) == set(ESTIMATORS)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_policy_loss_matches_verl(name, seed):
    case, (loss_name, params, agg, metric_names) = CASES[seed], LOSSES[name]
    x, want = tensors(case), case["losses"][name]
    logp = x["logp"].clone().requires_grad_(True)
    token_loss, metrics = get_policy_loss(loss_name)(logp, PolicyInputs(x["old"], x["advantages"], x["mask"]),
                                                     **params)
    loss = aggregate(token_loss, x["mask"], agg, max_len=x["mask"].shape[1])
    loss.backward()
    torch.testing.assert_close(loss.detach(), torch.tensor(want["loss"]), **TOL)
    torch.testing.assert_close(logp.grad, torch.tensor(want["grad"]), **TOL)
    for theirs, ours in metric_names.items():
        torch.testing.assert_close(metrics[ours].float(), torch.tensor(want["metrics"][theirs]), **TOL)
    assert want["grad"] != torch.zeros_like(logp).tolist()  # the inputs exercise the gradient


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_estimator_matches_verl(name, seed):
    case, (estimator, params) = CASES[seed], ESTIMATORS[name]
    x = tensors(case)
    adv = get_advantage(estimator)(x["rewards"], x["groups"], x["mask"], **params)
    per_token = (adv.unsqueeze(-1) if adv.dim() == 1 else adv) * x["mask"]
    torch.testing.assert_close(per_token, torch.tensor(case["estimators"][name]), **TOL)


@pytest.mark.parametrize("seed", range(3))
def test_rollout_correction_matches_verl(seed):
    case = CASES[seed]
    x = tensors(case)
    log_ratio, mask = x["old"] - x["rollout"], x["mask"]
    for level in ("token", "sequence"):
        for cap in (2.0, 1.2):
            torch.testing.assert_close(correction_weights(log_ratio, mask, level=level, cap=cap),
                                       torch.tensor(case["correction"][f"weights_{level}_{cap}"]), **TOL)
        for low, high in ((0.5, 2.0), (0.8, 1.1)):
            want = torch.tensor(case["correction"][f"reject_{level}_{low}_{high}"])
            got = rejection_mask(log_ratio, mask, level=level, low=low, high=high)
            assert torch.equal(got, want), (level, low, high)
            if (level, low) == ("token", 0.8):
                assert 0 < got.sum() < mask.sum()  # the tight band rejects some tokens
