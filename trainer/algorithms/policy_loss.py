"""Per-token policy-gradient losses.

Signature: fn(logp [B,T], inputs: PolicyInputs, **params) -> (loss [B,T] zeroed where inputs.mask == 0,
metrics: name -> detached scalar). `logp` carries the gradient; `inputs` holds the rest of the micro-batch
(old, rollout and reference log-probs, advantages, mask). The actor passes `eps_low` / `eps_high`
(algorithm.eps_low / eps_high) to a loss that declares them, and `algorithm.policy_loss_params` as the rest
of its keyword arguments. Reduction to a scalar is left to aggregation.py so every loss works with every
mode; a sequence-level loss puts its sequence's value on each of the sequence's tokens, so that
`seq_mean_token_mean` gives the paper's mean over sequences.

tests/test_policy_losses.py checks each against hand-computed values and against verl 0.9.1's
core_algos on saved inputs; docs/algorithms.md lists the deliberate differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from plugins.registry import Registry

from .kl import LOG_RATIO_CLAMP
from .token_ops import masked_mean

POLICY_LOSSES = Registry("policy loss", args=2)
# Set by their own config keys (algorithm.eps_low / eps_high), never through policy_loss_params.
CLIP_PARAMS = ("eps_low", "eps_high")


@dataclass
class PolicyInputs:
    """A micro-batch as a policy loss sees it; every tensor is response-aligned [B, T]."""

    old_logp: Tensor  # the ratio's denominator: the proximal policy (the rollout engine's in bypass mode)
    advantages: Tensor  # [B] per sequence or [B, T] per token; `token_advantages` gives [B, T]
    mask: Tensor  # 1 on tokens that count (rejected tokens already removed)
    rollout_logp: Tensor | None = None  # as the rollout engine reported
    ref_logp: Tensor | None = None  # the frozen reference

    def token_advantages(self, dtype: torch.dtype) -> Tensor:
        adv = self.advantages.to(dtype)
        return adv.unsqueeze(-1).expand_as(self.mask) if adv.dim() == 1 else adv


def _masked(loss: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask.bool(), loss, torch.zeros_like(loss))


def _log_ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    return (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def _ratio_metrics(log_ratio: Tensor, mask: Tensor) -> dict[str, Tensor]:
    # approx_kl is k3 of KL(pi_old || pi) from tokens sampled by pi_old:
    # ratio - 1 - log(ratio), non-negative and unbiased.
    with torch.no_grad():
        ratio = torch.exp(log_ratio)
        return {"ratio_mean": masked_mean(ratio, mask), "approx_kl": masked_mean(ratio - 1 - log_ratio, mask)}


def _sequence_mean(values: Tensor, mask: Tensor) -> Tensor:
    """[B] mean of each row's masked values (0 for an empty row)."""
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip(logp: Tensor, inputs: PolicyInputs, *, eps_low: float = 0.2, eps_high: float = 0.2,
             dual_clip: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017, arXiv:1707.06347) with an asymmetric range
    (clip-higher, DAPO, arXiv:2503.14476).

    ratio = exp(logp - old_logp)
    loss  = max(-A * ratio, -A * clip(ratio, 1 - eps_low, 1 + eps_high))
    dual_clip = c > 1 (Ye et al. 2020, arXiv:1912.09729): for A < 0 the loss is further capped at -c * A,
    so a token whose ratio exploded cannot dominate the batch (its gradient becomes 0).

    Metrics: clip_frac (tokens where the clipped term is the active one), dual_clip_frac (only when
    dual_clip is set), ratio_mean, approx_kl (k3, see above).
    """
    m = inputs.mask.bool()
    log_ratio = _log_ratio(logp, inputs.old_logp)
    ratio = torch.exp(log_ratio)
    adv = inputs.token_advantages(logp.dtype)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    metrics = _ratio_metrics(log_ratio, m)
    metrics["clip_frac"] = masked_mean((clipped > unclipped).to(logp.dtype), m).detach()
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        cap = -adv * dual_clip
        hit = (adv < 0) & (loss > cap)
        loss = torch.where(hit, cap, loss)
        metrics["dual_clip_frac"] = masked_mean(hit.to(logp.dtype), m).detach()
    return _masked(loss, m), metrics


@POLICY_LOSSES.register("vanilla_pg")
def vanilla_pg(logp: Tensor, inputs: PolicyInputs) -> tuple[Tensor, dict[str, Tensor]]:
    """REINFORCE (Williams 1992): loss = -A * logp (no ratio, no clipping; on-policy only).

    Returns ratio_mean / approx_kl too so logs have the same keys as ppo_clip; clip_frac is always 0.
    """
    m = inputs.mask.bool()
    loss = -inputs.token_advantages(logp.dtype) * logp
    metrics = _ratio_metrics(_log_ratio(logp, inputs.old_logp).detach(), m)
    metrics["clip_frac"] = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return _masked(loss, m), metrics


@POLICY_LOSSES.register("gspo")
def gspo(logp: Tensor, inputs: PolicyInputs, *, eps_low: float = 3e-4, eps_high: float = 4e-4,
         max_log_ratio: float = 10.0) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO, Group Sequence Policy Optimization (Zheng et al. 2025, arXiv:2507.18071).

    The ratio is the sequence's: s_i = exp(mean_t(logp - old_logp)), the geometric mean of its token
    ratios, clipped to [1 - eps_low, 1 + eps_high] (the paper's 3e-4 / 4e-4: a sequence ratio moves far
    less than a token's). Per token, s_i,t = sg[s_i] * pi(y_t) / sg[pi(y_t)] has the value s_i and the
    gradient of the token-level GSPO-token objective; loss = max(-A s_i,t, -A clip(s_i,t)).
    The log of s_i,t is capped at `max_log_ratio` before exp. Use loss_agg=seq_mean_token_mean for the
    paper's per-sequence mean.
    """
    m = inputs.mask.bool()
    mask = inputs.mask.to(logp.dtype)
    token_log_ratio = logp - inputs.old_logp
    seq_log_ratio = _sequence_mean(token_log_ratio, mask)
    log_ratio = (logp - logp.detach() + seq_log_ratio.detach().unsqueeze(-1)).clamp(max=max_log_ratio)
    ratio = torch.exp(log_ratio)
    adv = inputs.token_advantages(logp.dtype)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    metrics = _ratio_metrics(_log_ratio(logp, inputs.old_logp).detach(), m)
    metrics["clip_frac"] = masked_mean((clipped > unclipped).to(logp.dtype), m).detach()
    metrics["seq_ratio_mean"] = torch.exp(seq_log_ratio).mean().detach()
    return _masked(torch.maximum(unclipped, clipped), m), metrics


@POLICY_LOSSES.register("cispo")
def cispo(logp: Tensor, inputs: PolicyInputs, *, eps_low: float = 0.2, eps_high: float = 0.2,
          ) -> tuple[Tensor, dict[str, Tensor]]:
    """CISPO, Clipped IS-weight Policy Optimization (MiniMax-M1, arXiv:2506.13585).

    loss = -sg[clip(ratio, 1 - eps_low, 1 + eps_high)] * A * logp: the importance weight is clipped and
    detached, so every token keeps a gradient (PPO's clip drops the gradient of clipped tokens).
    The paper sets no lower bound in effect (a large eps_low) and eps_high around 0.28 or larger.
    Metrics: clip_frac (tokens whose weight was clipped), ratio_mean, approx_kl.
    """
    m = inputs.mask.bool()
    log_ratio = _log_ratio(logp, inputs.old_logp)
    ratio = torch.exp(log_ratio)
    weight = ratio.clamp(1.0 - eps_low, 1.0 + eps_high).detach()
    loss = -weight * inputs.token_advantages(logp.dtype) * logp
    metrics = _ratio_metrics(log_ratio, m)
    metrics["clip_frac"] = masked_mean((ratio != weight).to(logp.dtype), m).detach()
    return _masked(loss, m), metrics


@POLICY_LOSSES.register("sapo")
def sapo(logp: Tensor, inputs: PolicyInputs, *, tau_pos: float = 1.0, tau_neg: float = 1.05,
         ) -> tuple[Tensor, dict[str, Tensor]]:
    """SAPO, Soft Adaptive Policy Optimization (Qwen, arXiv:2511.20347).

    A smooth gate in place of the hard clip: loss = -A * f(ratio), f(r) = sigmoid(tau (r - 1)) * 4 / tau,
    tau = tau_pos where A > 0 and tau_neg elsewhere. f(1) = 2 / tau and f'(1) = 1 (the policy gradient at
    ratio 1); the gradient fades smoothly as the ratio leaves 1, faster for the larger tau (negative tokens).
    Use loss_agg=seq_mean_token_mean as the paper does.
    """
    if tau_pos <= 0 or tau_neg <= 0:
        raise ValueError(f"sapo temperatures must be > 0, got tau_pos={tau_pos}, tau_neg={tau_neg}")
    m = inputs.mask.bool()
    log_ratio = _log_ratio(logp, inputs.old_logp)
    ratio = torch.exp(log_ratio)
    adv = inputs.token_advantages(logp.dtype)
    tau = torch.where(adv > 0, torch.full_like(adv, tau_pos), torch.full_like(adv, tau_neg))
    gate = torch.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)
    metrics = _ratio_metrics(log_ratio, m)
    metrics["gate_mean"] = masked_mean(gate, m).detach()
    return _masked(-adv * gate, m), metrics


@POLICY_LOSSES.register("gmpo")
def gmpo(logp: Tensor, inputs: PolicyInputs, *, eps_low: float = 0.4, eps_high: float = 0.4,
         ) -> tuple[Tensor, dict[str, Tensor]]:
    """GMPO, Geometric-Mean Policy Optimization (Zhao et al. 2025, arXiv:2507.20673).

    The sequence's objective is A times the geometric mean of its token ratios, each token's log-ratio
    clipped in log space to [-eps_low, eps_high] on the side the advantage's sign makes pessimistic
    (the paper's (e^-0.4, e^0.4)): ratio_i = exp(mean_t sign(A) * min(sign(A) l_t, sign(A) clip(l_t))).
    The sequence's loss -A_i * ratio_i (A_i: the mean of its token advantages) is put on each of its
    tokens: loss_agg=seq_mean_token_mean gives the paper's mean over sequences.
    Metrics: clip_frac (tokens clipped with A > 0), clip_frac_low (with A < 0), ratio_mean, approx_kl.
    """
    m = inputs.mask.bool()
    mask = inputs.mask.to(logp.dtype)
    log_ratio = logp - inputs.old_logp
    adv = inputs.token_advantages(logp.dtype)
    sign = torch.sign(adv)
    clamped = log_ratio.clamp(-eps_low, eps_high)
    pessimistic = sign * torch.minimum(sign * log_ratio, sign * clamped)
    ratio = torch.exp(_sequence_mean(pessimistic, mask))
    loss = (-_sequence_mean(adv, mask) * ratio).unsqueeze(-1).expand_as(logp)
    clipped = (log_ratio != clamped).to(logp.dtype)
    metrics = _ratio_metrics(_log_ratio(logp, inputs.old_logp).detach(), m)
    metrics["clip_frac"] = masked_mean(clipped * (adv > 0), m).detach()
    metrics["clip_frac_low"] = masked_mean(clipped * (adv < 0), m).detach()
    return _masked(loss, m), metrics


def _dppo(logp: Tensor, inputs: PolicyInputs, inside: Tensor, truncate: float) -> tuple[Tensor, dict[str, Tensor]]:
    """The DPPO loss once the trust region is known: -A * sg[min(ratio, truncate)] * logp on tokens inside
    it (`inside` [B, T] bool: whether the token may move the way its advantage pushes it)."""
    m = inputs.mask.bool()
    log_ratio = _log_ratio(logp, inputs.old_logp)
    ratio = torch.exp(log_ratio)
    weight = ratio.clamp(max=truncate).detach()
    keep = inside.detach().to(logp.dtype)
    loss = -inputs.token_advantages(logp.dtype) * weight * logp * keep
    metrics = _ratio_metrics(log_ratio, m)
    metrics["clip_frac"] = masked_mean(1.0 - keep, m).detach()
    metrics["truncated_frac"] = masked_mean((ratio > truncate).to(logp.dtype) * keep, m).detach()
    return _masked(loss, m), metrics


@POLICY_LOSSES.register("dppo_tv")
def dppo_tv(logp: Tensor, inputs: PolicyInputs, *, eps_low: float = 0.2, eps_high: float = 0.2,
            truncate: float = 20.0) -> tuple[Tensor, dict[str, Tensor]]:
    """DPPO with the binary total-variation trust region (Divergence PPO, arXiv:2602.04879).

    A token stays in the loss while its probability has moved less than the threshold the way its
    advantage pushes it: p - p_old <= eps_high when A > 0, p - p_old >= -eps_low otherwise (eps_* are
    divergence thresholds here, not ratio ranges). Kept tokens get -A * sg[min(ratio, truncate)] * logp:
    the importance weight truncated (TIS) instead of PPO's clip. Metrics: clip_frac (tokens outside the
    region), truncated_frac, ratio_mean, approx_kl.
    """
    prob, old_prob = torch.exp(logp), torch.exp(inputs.old_logp)
    adv = inputs.token_advantages(logp.dtype)
    inside = torch.where(adv > 0, prob - old_prob <= eps_high, prob - old_prob >= -eps_low)
    return _dppo(logp, inputs, inside, truncate)


@POLICY_LOSSES.register("dppo_kl")
def dppo_kl(logp: Tensor, inputs: PolicyInputs, *, eps_low: float = 0.2, eps_high: float = 0.2,
            truncate: float = 20.0) -> tuple[Tensor, dict[str, Tensor]]:
    """DPPO with the binary KL trust region (Divergence PPO, arXiv:2602.04879).

    As dppo_tv, with the region measured by the KL between the Bernoulli distributions (p_old, 1 - p_old)
    and (p, 1 - p) of the sampled token: a token whose probability moved against its advantage always
    stays; one that moved with it stays while that KL is at most eps_high (A > 0) or eps_low (A <= 0).
    """
    prob, old_prob = torch.exp(logp), torch.exp(inputs.old_logp)
    binary_kl = old_prob * (inputs.old_logp - logp) + (1 - old_prob) * torch.log(
        (1.0 - old_prob + 1e-8) / (1.0 - prob + 1e-8))
    adv = inputs.token_advantages(logp.dtype)
    inside = torch.where(adv > 0, (binary_kl <= eps_high) | (prob <= old_prob),
                         (binary_kl <= eps_low) | (prob >= old_prob))
    return _dppo(logp, inputs, inside, truncate)
