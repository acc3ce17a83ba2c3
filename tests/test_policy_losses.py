"""Hand-computed checks for the newer policy losses and advantage estimators (arithmetic in comments).
Their agreement with verl 0.9.1 on random inputs: tests/test_verl_parity.py."""

import math

import pytest
import torch

from trainer.algorithms import aggregate, get_advantage, get_policy_loss
from trainer.algorithms.policy_loss import PolicyInputs


def close(a, b, tol=1e-5):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32),
                               atol=tol, rtol=tol)


def from_ratios(ratios, old=None):
    """Current log-probs (with gradient) whose ratios to `old` (zeros: probability 1) are `ratios`."""
    ratios = torch.tensor(ratios)
    old = torch.zeros_like(ratios) if old is None else torch.tensor(old)
    return (old + ratios.log()).requires_grad_(True), old


def test_gspo_uses_the_sequence_ratio_and_its_token_gradient():
    # Both rows: token ratios 1.2 and 0.8 -> s = exp(mean(ln 1.2, ln 0.8)) = sqrt(0.96) = 0.979796.
    # Clip range [0.99, 1.01]. A=+1: max(-0.979796, -0.99) = -0.979796 (unclipped, pessimistic side).
    # A=-1: max(0.979796, 0.99) = 0.99 (clipped, no gradient).
    logp, old = from_ratios([[1.2, 0.8], [1.2, 0.8]])
    mask = torch.ones(2, 2)
    loss, m = get_policy_loss("gspo")(logp, PolicyInputs(old, torch.tensor([1.0, -1.0]), mask),
                                      eps_low=0.01, eps_high=0.01)
    s = math.sqrt(0.96)
    close(loss, [[-s, -s], [0.99, 0.99]])
    close(m["clip_frac"], 0.5)
    close(m["seq_ratio_mean"], s)
    # s_i,t = sg[s] * exp(logp_t - sg[logp_t]): d/dlogp_t = s on unclipped tokens, times -A.
    loss.sum().backward()
    close(logp.grad, [[-s, -s], [0.0, 0.0]])


def test_cispo_clips_and_detaches_the_weight_keeping_every_gradient():
    # ratios 1.5, 0.5 with A=+1, range [0.8, 1.28] -> weights 1.28, 0.8.
    # loss = -w A logp: logp = ln 1.5 = 0.405465, ln 0.5 = -0.693147 -> -0.518995, 0.554518; grad = -w A.
    logp, old = from_ratios([[1.5, 0.5]])
    loss, m = get_policy_loss("cispo")(logp, PolicyInputs(old, torch.tensor([1.0]), torch.ones(1, 2)),
                                       eps_low=0.2, eps_high=0.28)
    close(loss, [[-0.518995, 0.554518]])
    close(m["clip_frac"], 1.0)
    loss.sum().backward()
    close(logp.grad, [[-1.28, -0.8]])  # both tokens keep a gradient (PPO's clip would zero the first)


def test_sapo_gate_values_and_slopes():
    # f(r) = sigmoid(tau (r - 1)) * 4 / tau. r=1: f = 2/tau, slope d f/d logp = r f'(r) = 1.
    # A=+1, tau_pos=1 at r=1 -> loss -2; A=-1, tau_neg=1.05 at r=1 -> +2/1.05 = 1.904762.
    # A=+1 at r=2: f = 4 sigmoid(1) = 2.924234; d/dlogp = 2 * 4 * sigmoid'(1) = 8 * 0.196612 = 1.572895.
    logp, old = from_ratios([[1.0, 2.0], [1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, m = get_policy_loss("sapo")(logp, PolicyInputs(old, torch.tensor([1.0, -1.0]), mask))
    close(loss, [[-2.0, -2.924234], [1.904762, 0.0]])
    loss.sum().backward()
    close(logp.grad, [[-1.0, -1.572895], [1.0, 0.0]])
    with pytest.raises(ValueError, match="tau"):
        get_policy_loss("sapo")(logp, PolicyInputs(old, torch.tensor([1.0, -1.0]), mask), tau_neg=0.0)


def test_gmpo_geometric_mean_with_pessimistic_log_space_clip():
    # eps 0.4: log-ratios clamp to [-0.4, 0.4] on the side the advantage makes pessimistic.
    # Row 0, A=+1, l = [0.5, -0.1]: min(l, clamp) = [0.4, -0.1] -> mean 0.15 -> ratio e^0.15 = 1.161834.
    # Row 1, A=-1, l = [0.5, -0.6]: max(l, clamp) = [0.5, -0.4] -> mean 0.05 -> ratio e^0.05 = 1.051271.
    # loss -A ratio on every token of the row; clipped tokens: row 0 tok 0 (A>0), row 1 both (A<0).
    logp, old = from_ratios([[math.exp(0.5), math.exp(-0.1)], [math.exp(0.5), math.exp(-0.6)]])
    mask = torch.ones(2, 2)
    loss, m = get_policy_loss("gmpo")(logp, PolicyInputs(old, torch.tensor([1.0, -1.0]), mask))
    close(loss, [[-1.161834, -1.161834], [1.051271, 1.051271]])
    close(m["clip_frac"], 1 / 4)
    close(m["clip_frac_low"], 2 / 4)
    # seq_mean_token_mean gives the paper's mean over sequences: (-1.161834 + 1.051271) / 2.
    close(aggregate(loss, mask, "seq_mean_token_mean"), -0.0552815)


def dppo_inputs():
    # p_old = 0.5 everywhere; current p = 0.7, 0.55 (A=+1) and 0.3, 0.45 (A=-1).
    old = torch.full((2, 2), math.log(0.5))
    logp = torch.tensor([[0.7, 0.55], [0.3, 0.45]]).log().requires_grad_(True)
    return logp, PolicyInputs(old, torch.tensor([1.0, -1.0]), torch.ones(2, 2))


def test_dppo_tv_keeps_tokens_inside_the_probability_band():
    # eps 0.1: p - p_old = +0.2 (A>0, out), +0.05 (A>0, in), -0.2 (A<0, out), -0.05 (A<0, in).
    # In: -A min(r, 20) logp: r = 1.1 -> -1.1 ln 0.55 = 0.657621; r = 0.9 -> +0.9 ln 0.45 = -0.718657.
    logp, inputs = dppo_inputs()
    loss, m = get_policy_loss("dppo_tv")(logp, inputs, eps_low=0.1, eps_high=0.1)
    close(loss, [[0.0, 0.657621], [0.0, -0.718657]])
    close(m["clip_frac"], 0.5)
    close(m["truncated_frac"], 0.0)
    loss.sum().backward()
    close(logp.grad, [[0.0, -1.1], [0.0, 0.9]])  # -A * the detached weight
    # truncate 1.05: the kept A>0 token's weight 1.1 becomes 1.05.
    loss, m = get_policy_loss("dppo_tv")(logp, inputs, eps_low=0.1, eps_high=0.1, truncate=1.05)
    close(loss[0, 1], -1.05 * math.log(0.55))
    close(m["truncated_frac"], 0.25)


def test_dppo_kl_binary_kl_region():
    # p_old 0.5 -> p 0.7: KL(Bern(.5) || Bern(.7)) = .5 ln(.5/.7) + .5 ln(.5/.3) = 0.087177.
    # eps_high 0.1: inside (0.087 <= 0.1); eps_high 0.05: outside. p 0.55 (KL 0.005025) stays inside both.
    # A<0 tokens that fell (0.3, 0.45) moved with their advantage: KL(.5||.3) = 0.087177 > eps_low 0.05 -> out;
    # KL(.5||.45) = 0.005025 -> in.
    logp, inputs = dppo_inputs()
    _, wide = get_policy_loss("dppo_kl")(logp, inputs, eps_low=0.05, eps_high=0.1)
    loss, narrow = get_policy_loss("dppo_kl")(logp, inputs, eps_low=0.05, eps_high=0.05)
    close(wide["clip_frac"], 1 / 4)
    close(narrow["clip_frac"], 2 / 4)
    close(loss, [[0.0, -1.1 * math.log(0.55)], [0.0, 0.9 * math.log(0.45)]])
    # A token that moved against its advantage always stays: p 0.3 with A=+1.
    logp2 = torch.tensor([[0.3]]).log()
    loss2, m2 = get_policy_loss("dppo_kl")(logp2, PolicyInputs(torch.tensor([[math.log(0.5)]]), torch.tensor([1.0]),
                                                               torch.ones(1, 1)), eps_low=1e-6, eps_high=1e-6)
    close(m2["clip_frac"], 0.0)
    close(loss2, [[-0.6 * math.log(0.3)]])  # -A r logp, r = 0.6


def test_per_token_advantages_reach_the_loss():
    # ppo_clip on-policy with [B, T] advantages: loss = -A_t per token.
    logp, old = from_ratios([[1.0, 1.0]])
    loss, _ = get_policy_loss("ppo_clip")(logp, PolicyInputs(old, torch.tensor([[2.0, -3.0]]), torch.ones(1, 2)))
    close(loss, [[-2.0, 3.0]])


# ---------------------------------------------------------------- estimators


def test_reinforce_plus_plus_discounted_whitened_returns():
    # rewards [1, 0]; gamma 0.5; row 1 has 2 response tokens.
    # returns: row 0 [0.25, 0.5, 1], row 1 [0, 0]; over the 5 tokens mean 0.35,
    # deviations [-0.1, 0.15, 0.65, -0.35, -0.35], sum of squares 0.7, unbiased var 0.175, std 0.418330.
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = get_advantage("reinforce_plus_plus")(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), mask, gamma=0.5)
    close(adv, [[-0.239046, 0.358569, 1.553797], [-0.836660, -0.836660, 0.0]])


def test_reinforce_plus_plus_passes_the_return_through_masked_spans():
    # A masked token (a simulator's turn) neither discounts nor takes the return: gamma 0.5,
    # mask [1, 0, 1] -> returns [0.5, 0, 1] before whitening; with a second row of zeros
    # [0, 0, 0]: tokens 0.5, 1, 0, 0, 0 -> mean 0.3, deviations [0.2, 0.7, -0.3 x 3],
    # squares 0.04 + 0.49 + 0.27 = 0.8, var 0.2, std 0.447214.
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    adv = get_advantage("reinforce_plus_plus")(torch.tensor([1.0, 0.0]), torch.tensor([0, 1]), mask, gamma=0.5)
    close(adv, [[0.447214, 0.0, 1.565248], [-0.670820, -0.670820, -0.670820]])


def test_reinforce_plus_plus_baseline_group_centred_then_whitened():
    # groups [0, 0, 1, 2]: group 0 mean 0.5 -> [0.5, -0.5]; size-1 groups keep r -> 1, 1.
    # Tokens (mask rows 2, 1, 2, 1): 0.5, 0.5, -0.5, 1, 1, 1 -> mean 0.583333, unbiased var 0.341667,
    # std 0.584523.
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    adv = get_advantage("reinforce_plus_plus_baseline")(torch.tensor([1.0, 0.0, 1.0, 1.0]),
                                                        torch.tensor([0, 0, 1, 2]), mask)
    close(adv, [[-0.142566, -0.142566], [-1.853358, 0.0], [0.712831, 0.712831], [0.712831, 0.0]])
    with pytest.raises(ValueError, match="at least 2 response tokens"):
        get_advantage("reinforce_plus_plus_baseline")(torch.tensor([1.0]), torch.tensor([0]), torch.ones(1, 1))


def test_grpo_passk_rewards_only_each_groups_best():
    # group 0 [1, 0, 0.5]: best - second = 0.5, std (unbiased) 0.5 -> 1 on the best; group 1 ties -> 0.
    rewards, groups = torch.tensor([1.0, 0.0, 0.5, 0.2, 0.2]), torch.tensor([0, 0, 0, 1, 1])
    mask = torch.ones(5, 2)
    close(get_advantage("grpo_passk")(rewards, groups, mask), [1.0, 0.0, 0.0, 0.0, 0.0])
    close(get_advantage("grpo_passk")(rewards, groups, mask, norm_by_std=False), [0.5, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="at least 2 completions per group"):
        get_advantage("grpo_passk")(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1]), torch.ones(3, 1))
