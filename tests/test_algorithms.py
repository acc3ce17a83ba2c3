"""Hand-computed checks for trainer.algorithms (arithmetic in comments)."""

import math

import pytest
import torch

from trainer.algorithms import (
    ADVANTAGES,
    AGGREGATIONS,
    KL_ESTIMATORS,
    POLICY_LOSSES,
    aggregate,
    entropy_from_logits,
    get_advantage,
    get_kl,
    get_policy_loss,
    logprobs_from_logits,
    masked_mean,
)
from trainer.algorithms.policy_loss import PolicyInputs


def close(a, b, tol=1e-5):
    f32 = torch.float32
    torch.testing.assert_close(torch.as_tensor(a, dtype=f32), torch.as_tensor(b, dtype=f32), atol=tol, rtol=tol)


# ---------------------------------------------------------------- registry


def shipped(registry) -> list[str]:
    """The names registered by trainer/algorithms itself (tests register their own, e.g. docs/plugins.md's)."""
    return [name for name in registry if registry.get(name).fn.__module__.startswith("trainer.algorithms.")]


def test_registered_names_are_all_covered_here():
    # If this fails, a new function was registered: add a hand-computed test for it.
    # (the newer losses and estimators: tests/test_policy_losses.py)
    assert shipped(ADVANTAGES) == ["grpo", "grpo_passk", "reinforce_baseline", "reinforce_plus_plus",
                                   "reinforce_plus_plus_baseline", "rloo"]
    assert shipped(POLICY_LOSSES) == ["cispo", "dppo_kl", "dppo_tv", "gmpo", "gspo", "ppo_clip", "sapo", "vanilla_pg"]
    assert shipped(KL_ESTIMATORS) == ["k1", "k2", "k3"]
    assert shipped(AGGREGATIONS) == [
        "seq_mean_token_mean",
        "seq_mean_token_sum",
        "seq_mean_token_sum_norm",
        "token_mean",
    ]


@pytest.mark.parametrize("getter,known", [(get_advantage, "grpo"), (get_policy_loss, "ppo_clip"), (get_kl, "k3")])
def test_unknown_name_lists_registered(getter, known):
    with pytest.raises(KeyError) as e:
        getter("nope")
    assert known in str(e.value) and "nope" in str(e.value)
    with pytest.raises(KeyError, match="token_mean"):
        aggregate(torch.ones(1, 1), torch.ones(1, 1), "nope")


def test_parameters_come_from_the_signatures():
    # What algorithm.advantage_params / policy_loss_params may set (the registry's contract: tests/test_plugins.py).
    assert get_advantage("grpo").params == {"eps": 1e-6, "norm_by_std": True}
    assert get_advantage("reinforce_baseline").params == {"eps": 1e-6, "whiten": False}
    assert get_policy_loss("ppo_clip").params == {"eps_low": 0.2, "eps_high": 0.2, "dual_clip": None}
    assert get_policy_loss("vanilla_pg").params == {}  # no clip range: the actor does not pass one
    assert get_kl("k3").params == {"clamp": 20.0} and get_kl("k1").params == {}
    assert not any(registry.get(name).accepts_any_param
                   for registry in (ADVANTAGES, POLICY_LOSSES, KL_ESTIMATORS, AGGREGATIONS) for name in shipped(registry))
    with pytest.raises(ValueError, match="advantage estimator 'rloo' has no parameter 'norm_by_std'; its parameters: eps"):
        ADVANTAGES.check("rloo", {"norm_by_std": False})


# ---------------------------------------------------------------- advantages

# Mixed, unsorted groups of unequal size:
#   rewards     [1, 2, 0, 4, 3, 5]
#   group_index [2, 0, 2, 0, 7, 0]
# group 0 = positions 1,3,5 = [2,4,5]; group 2 = positions 0,2 = [1,0]; group 7 = [3] (size 1)
R = torch.tensor([1.0, 2.0, 0.0, 4.0, 3.0, 5.0])
G = torch.tensor([2, 0, 2, 0, 7, 0])


def test_grpo_single_group():
    # [1,0,0,1]: mean 0.5, unbiased var = 4*0.25/3 = 1/3, std 0.57735 -> +-0.5/0.57735 = +-0.866025
    adv = get_advantage("grpo")(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.zeros(4, dtype=torch.long), None, eps=0.0)
    close(adv, [0.866025, -0.866025, -0.866025, 0.866025])
    # default eps=1e-6 barely moves it
    adv = get_advantage("grpo")(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.zeros(4, dtype=torch.long), None)
    close(adv, [0.866025, -0.866025, -0.866025, 0.866025], tol=1e-5)


def test_grpo_mixed_unsorted_groups():
    # group 0 [2,4,5]: mean 11/3 = 3.666667; dev -1.666667, 0.333333, 1.333333
    #   sq sum 2.777778 + 0.111111 + 1.777778 = 4.666667; var 4.666667/2 = 2.333333; std 1.527525
    #   adv -1.091089, 0.218218, 0.872872
    # group 2 [1,0]: mean 0.5, var 0.5/1, std 0.707107 -> +0.707107, -0.707107
    # group 7 size 1 -> 0
    adv = get_advantage("grpo")(R, G, None, eps=0.0)
    close(adv, [0.707107, -1.091089, -0.707107, 0.218218, 0.0, 0.872872])


def test_grpo_without_std_is_mean_centring():
    # group 0: 2-11/3, 4-11/3, 5-11/3 = -1.666667, 0.333333, 1.333333; group 2: +-0.5; group 7: 0
    adv = get_advantage("grpo")(R, G, None, norm_by_std=False)
    close(adv, [0.5, -1.666667, -0.5, 0.333333, 0.0, 1.333333])


def test_grpo_constant_group_and_all_singletons():
    # [1,1] has std 0: numerator 0 -> 0 (eps keeps it finite); singletons -> 0
    adv = get_advantage("grpo")(torch.tensor([1.0, 1.0, 7.0]), torch.tensor([5, 5, 9]), None)
    close(adv, [0.0, 0.0, 0.0])
    assert torch.isfinite(adv).all()
    adv = get_advantage("grpo")(torch.tensor([3.0, -1.0]), torch.tensor([0, 1]), None)
    close(adv, [0.0, 0.0])


def test_grpo_equal_rewards_that_float_cannot_hold_exactly_get_zero():
    # Eight rewards of 1.2 (a 0.2 format term plus 1.0): in float32 their mean and std come out ~1e-7
    # off, and dividing one by the other used to give every member an advantage of about +0.1.
    rewards = torch.tensor([1.2] * 8 + [0.2] * 6 + [1.2, 0.2])
    groups = torch.tensor([0] * 8 + [1] * 6 + [2, 2])
    adv = get_advantage("grpo")(rewards, groups, None)
    assert torch.equal(adv[:14], torch.zeros(14))
    # [1.2, 0.2]: mean 0.7, unbiased std sqrt(0.5), so +-0.5 / (sqrt(0.5) + eps).
    close(adv[14:], [0.5 / (0.5 ** 0.5 + 1e-6), -0.5 / (0.5 ** 0.5 + 1e-6)])


def test_rloo_mixed_groups():
    # group 0 [2,4,5]: 2-(4+5)/2 = -2.5; 4-(2+5)/2 = 0.5; 5-(2+4)/2 = 2.0
    # group 2 [1,0]: 1-0 = 1; 0-1 = -1; group 7 (size 1): 0
    adv = get_advantage("rloo")(R, G, None)
    close(adv, [1.0, -2.5, -1.0, 0.5, 0.0, 2.0])


def test_reinforce_baseline():
    # batch mean 15/6 = 2.5 -> [-1.5, -0.5, -2.5, 1.5, 0.5, 2.5] (groups ignored)
    adv = get_advantage("reinforce_baseline")(R, G, None)
    close(adv, [-1.5, -0.5, -2.5, 1.5, 0.5, 2.5])
    # whiten: sq sum 2.25+0.25+6.25+2.25+0.25+6.25 = 17.5; var 17.5/5 = 3.5; std 1.870829
    # -> -0.801784, -0.267261, -1.336306, 0.801784, 0.267261, 1.336306
    adv = get_advantage("reinforce_baseline")(R, G, None, whiten=True, eps=0.0)
    close(adv, [-0.801784, -0.267261, -1.336306, 0.801784, 0.267261, 1.336306])


def test_advantage_keeps_dtype_and_rejects_bad_shapes():
    adv = get_advantage("grpo")(R.double(), G, None)
    assert adv.dtype == torch.float64
    with pytest.raises(ValueError):
        get_advantage("rloo")(R, G[:3], None)


# ---------------------------------------------------------------- policy losses

# Row 0, A=+1, ratios [1.3, 1.1, 0.7]; row 1, A=-1, ratios [0.7, 1.3, 0.9], last token masked.
RATIOS = torch.tensor([[1.3, 1.1, 0.7], [0.7, 1.3, 0.9]])
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.3, -2.2]])
ADV = torch.tensor([1.0, -1.0])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def _logp(requires_grad=False):
    lp = (OLD + RATIOS.log()).clone()
    return lp.requires_grad_(requires_grad)


def test_ppo_clip_higher():
    # eps_low 0.2, eps_high 0.28 -> clip range [0.8, 1.28]; loss = max(-A r, -A clip(r))
    # row0 A=+1: r=1.3 -> max(-1.3, -1.28) = -1.28 (clipped)
    #            r=1.1 -> -1.1 ; r=0.7 -> max(-0.7, -0.8) = -0.7 (unclipped: pessimistic side)
    # row1 A=-1: r=0.7 -> max(0.7, 0.8) = 0.8 (clipped); r=1.3 -> max(1.3, 1.28) = 1.3
    #            r=0.9 masked -> 0
    loss, m = get_policy_loss("ppo_clip")(_logp(), PolicyInputs(OLD, ADV, MASK), eps_low=0.2, eps_high=0.28)
    close(loss, [[-1.28, -1.1, -0.7], [0.8, 1.3, 0.0]])
    close(m["clip_frac"], 2 / 5)  # 2 clipped of 5 valid tokens
    close(m["ratio_mean"], (1.3 + 1.1 + 0.7 + 0.7 + 1.3) / 5)  # 1.02
    # approx_kl = mean(r - 1 - ln r): 1.3 -> 0.037636, 1.1 -> 0.004690, 0.7 -> 0.056675
    # (2*0.037636 + 0.004690 + 2*0.056675) / 5 = 0.038662
    close(m["approx_kl"], 0.038662)
    assert "dual_clip_frac" not in m


def test_ppo_clip_symmetric():
    # eps_high 0.2 -> r=1.3 with A=+1 clips at 1.2 -> -1.2; r=1.3 with A=-1 stays 1.3
    loss, m = get_policy_loss("ppo_clip")(_logp(), PolicyInputs(OLD, ADV, MASK))
    close(loss, [[-1.2, -1.1, -0.7], [0.8, 1.3, 0.0]])
    close(m["clip_frac"], 0.4)


def test_ppo_clip_bool_mask_and_masked_nan_does_not_leak():
    lp = _logp()
    lp[1, 2] = float("nan")
    loss, m = get_policy_loss("ppo_clip")(lp, PolicyInputs(OLD, ADV, MASK.bool()))
    assert loss[1, 2] == 0.0 and torch.isfinite(m["ratio_mean"]) and torch.isfinite(m["clip_frac"])


def test_ppo_dual_clip():
    # clip range [0.8, 1.2], c = 3
    # A=-1, r=5: max(5, 1.2) = 5 > 3 = -c*A -> 3 (dual clipped)
    # A=-1, r=2: max(2, 1.2) = 2 <= 3 -> 2
    # A=+1, r=5: max(-5, -1.2) = -1.2 (ordinary clip; dual clip only touches A<0)
    ratios = torch.tensor([[5.0, 2.0], [5.0, 1.0]])
    old = torch.zeros(2, 2)
    logp = ratios.log().requires_grad_(True)
    adv = torch.tensor([-1.0, 1.0])
    mask = torch.ones(2, 2)
    loss, m = get_policy_loss("ppo_clip")(logp, PolicyInputs(old, adv, mask), dual_clip=3.0)
    close(loss, [[3.0, 2.0], [-1.2, -1.0]])
    close(m["dual_clip_frac"], 1 / 4)
    # clip_frac: only row1 r=5 is clipped by the ordinary clip -> 1/4
    close(m["clip_frac"], 1 / 4)
    # d/dlogp of -A r is -A r: dual-clipped and clipped tokens get 0; r=2,A=-1 -> 2; r=1,A=1 -> -1
    loss.sum().backward()
    close(logp.grad, [[0.0, 2.0], [0.0, -1.0]])
    with pytest.raises(ValueError):
        get_policy_loss("ppo_clip")(logp, PolicyInputs(old, adv, mask), dual_clip=1.0)


def test_ppo_clip_gradient_under_token_mean():
    # token_mean over N=5 valid tokens: grad = -A r / 5 on unclipped tokens, 0 on clipped/masked
    # row0 (A=1): r=1.3 clipped -> 0; r=1.1 -> -0.22; r=0.7 -> -0.14
    # row1 (A=-1): r=0.7 clipped -> 0; r=1.3 -> 0.26; masked -> 0
    logp = _logp(requires_grad=True)
    loss_tok, _ = get_policy_loss("ppo_clip")(logp, PolicyInputs(OLD, ADV, MASK), eps_low=0.2, eps_high=0.28)
    aggregate(loss_tok, MASK, "token_mean").backward()
    close(logp.grad, [[0.0, -0.22, -0.14], [0.0, 0.26, 0.0]])


def test_vanilla_pg():
    # loss = -A * logp: row0 A=2, logp [-1,-2] -> [2, 4]; row1 A=-1, logp [-0.5, -3] -> [-0.5, masked 0]
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, m = get_policy_loss("vanilla_pg")(logp, PolicyInputs(logp.detach(), torch.tensor([2.0, -1.0]), mask))
    close(loss, [[2.0, 4.0], [-0.5, 0.0]])
    close(m["clip_frac"], 0.0)
    close(m["ratio_mean"], 1.0)  # on-policy: old == new
    close(m["approx_kl"], 0.0)
    loss.sum().backward()
    close(logp.grad, [[-2.0, -2.0], [1.0, 0.0]])  # d(-A logp)/dlogp = -A


# ---------------------------------------------------------------- KL estimators


def test_kl_estimators_values():
    # logp - ref = [1, -1]
    logp = torch.tensor([0.0, -1.0])
    ref = torch.tensor([-1.0, 0.0])
    close(get_kl("k1")(logp, ref), [1.0, -1.0])
    close(get_kl("k2")(logp, ref), [0.5, 0.5])  # 0.5 * 1^2
    # k3: ref - logp = [-1, 1] -> e^-1 + 1 - 1 = 0.367879 ; e^1 - 1 - 1 = 0.718282
    close(get_kl("k3")(logp, ref), [0.367879, 0.718282])
    # equal log-probs -> 0 for all three
    for name in ("k1", "k2", "k3"):
        close(get_kl(name)(torch.tensor([-0.3]), torch.tensor([-0.3])), [0.0])


def test_k3_clamp():
    # ref - logp = 100 is clamped to 20: exp(20) - 20 - 1 = 485165174.4 (finite)
    out = get_kl("k3")(torch.tensor([0.0]), torch.tensor([100.0]))
    assert torch.isfinite(out).all()
    close(out, [math.exp(20) - 21], tol=1e-4)
    # without clamp it overflows float32
    assert torch.isinf(get_kl("k3")(torch.tensor([0.0]), torch.tensor([100.0]), clamp=None)).all()


# ---------------------------------------------------------------- aggregation

V = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_token_mean():
    close(aggregate(V, M, "token_mean"), (1 + 2 + 4) / 3)  # 7/3
    close(aggregate(V, M, "token_mean", num_tokens=7.0), 1.0)


def test_seq_mean_token_mean():
    # row means 1.5 and 4 -> (1.5 + 4) / 2 = 2.75
    close(aggregate(V, M, "seq_mean_token_mean"), 2.75)
    # empty row contributes 0 but still counts in num_seqs: (1.5 + 0) / 2
    close(aggregate(V, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), "seq_mean_token_mean"), 0.75)


def test_seq_mean_token_sum():
    close(aggregate(V, M, "seq_mean_token_sum"), (3 + 4) / 2)  # 3.5


def test_seq_mean_token_sum_norm():
    close(aggregate(V, M, "seq_mean_token_sum_norm", max_len=3), 7 / 6)  # 7 / (2*3)
    close(aggregate(V, M, "seq_mean_token_sum_norm", max_len=4), 7 / 8)
    with pytest.raises(ValueError):
        aggregate(V, M, "seq_mean_token_sum_norm")


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"])
@pytest.mark.parametrize("splits", [[2, 2, 2], [1, 2, 3], [6]])
def test_micro_batches_sum_to_full_batch(mode, splits):
    g = torch.Generator().manual_seed(0)
    vals = torch.randn(6, 5, generator=g, dtype=torch.float64)
    mask = (torch.rand(6, 5, generator=g) > 0.4).double()
    mask[0] = 0  # an empty sequence too
    totals = dict(num_tokens=mask.sum(), num_seqs=6, max_len=5)
    full = aggregate(vals, mask, mode, max_len=5)
    parts = sum(aggregate(v, m, mode, **totals) for v, m in zip(vals.split(splits), mask.split(splits)))
    torch.testing.assert_close(parts, full)


# ---------------------------------------------------------------- token ops


def test_logprobs_from_logits_manual():
    # softmax([1,2,3])[2] = 1 / (e^-2 + e^-1 + 1) = 1 / 1.503215 = 0.665241 -> ln = -0.407606
    # softmax([1,2,3])[0] = e^-2 / 1.503215 = 0.090031 -> ln = -2.407606
    logits = torch.tensor([[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]])
    labels = torch.tensor([[2, 0]])
    close(logprobs_from_logits(logits, labels), [[-0.407606, -2.407606]])


def test_logprobs_from_logits_chunks_and_bf16():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 4, 11, generator=g)
    labels = torch.randint(0, 11, (5, 4), generator=g)
    ref = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    for cs in (None, 1, 2, 8):
        close(logprobs_from_logits(logits, labels, chunk_size=cs), ref)
    out = logprobs_from_logits(logits.bfloat16(), labels)
    assert out.dtype == torch.float32
    ref_bf = torch.log_softmax(logits.bfloat16().float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    close(out, ref_bf)
    # gradient flows back to the logits
    lg = logits.clone().requires_grad_(True)
    logprobs_from_logits(lg, labels, chunk_size=2).sum().backward()
    assert lg.grad is not None and lg.grad.abs().sum() > 0


def test_entropy_from_logits():
    # uniform over V=7 -> ln 7 = 1.945910
    close(entropy_from_logits(torch.zeros(2, 3, 7)), torch.full((2, 3), math.log(7)))
    # logits [0, ln 3] -> p = [0.25, 0.75]; H = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.346574 + 0.215762 = 0.562335
    h = entropy_from_logits(torch.tensor([[[0.0, math.log(3)]]]).bfloat16(), chunk_size=1)
    assert h.dtype == torch.float32
    close(h, [[0.562335]], tol=2e-3)  # bf16 rounding of ln 3
    close(entropy_from_logits(torch.tensor([[[0.0, math.log(3)]]])), [[0.562335]])


def test_masked_mean_and_whiten():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    close(masked_mean(x, torch.tensor([[1, 0], [1, 1]])), 8 / 3)  # (1+3+4)/3
    close(masked_mean(x, torch.zeros(2, 2)), 0.0)  # empty mask -> 0, not nan
    close(masked_mean(x, torch.tensor([[1, 0], [1, 1]]), dim=-1), [1.0, 3.5])
