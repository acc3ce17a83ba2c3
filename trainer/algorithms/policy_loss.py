"""Per-token policy-gradient losses.

Signature: fn(logp [B,T], old_logp [B,T], advantages [B], mask [B,T], **params) -> (loss [B,T]
zeroed where mask==0, metrics: name -> detached scalar). The actor passes `eps_low` / `eps_high`
(algorithm.eps_low / eps_high) to a loss that declares them, and `algorithm.policy_loss_params` as
the rest of its keyword arguments. Reduction to a scalar is left to aggregation.py so every loss
works with every mode.
"""

from __future__ import annotations

import torch
from torch import Tensor

from plugins.registry import Registry

from .kl import LOG_RATIO_CLAMP
from .token_ops import masked_mean

POLICY_LOSSES = Registry("policy loss", args=4)
# Set by their own config keys (algorithm.eps_low / eps_high), never through policy_loss_params.
CLIP_PARAMS = ("eps_low", "eps_high")


def _ratio_metrics(log_ratio: Tensor, ratio: Tensor, mask: Tensor) -> dict[str, Tensor]:
    # approx_kl is k3 of KL(pi_old || pi) from tokens sampled by pi_old:
    # ratio - 1 - log(ratio), non-negative and unbiased.
    with torch.no_grad():
        return {
            "ratio_mean": masked_mean(ratio, mask),
            "approx_kl": masked_mean(ratio - 1 - log_ratio, mask),
        }


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate with asymmetric range (clip-higher, DAPO).

    ratio = exp(logp - old_logp)
    loss  = max(-A * ratio, -A * clip(ratio, 1 - eps_low, 1 + eps_high))
    dual_clip = c > 1: for A < 0 the loss is further capped at -c * A, so a token
    whose ratio exploded cannot dominate the batch (its gradient becomes 0).

    Metrics: clip_frac (tokens where the clipped term is the active one),
    dual_clip_frac (only when dual_clip is set), ratio_mean, approx_kl (k3, see above).
    """
    m = mask.bool()
    log_ratio = (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    adv = advantages.unsqueeze(-1).to(logp.dtype)

    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    metrics = _ratio_metrics(log_ratio, ratio, m)
    metrics["clip_frac"] = masked_mean((clipped > unclipped).to(logp.dtype), m).detach()

    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        cap = -adv * dual_clip
        hit = (adv < 0) & (loss > cap)
        loss = torch.where(hit, cap, loss)
        metrics["dual_clip_frac"] = masked_mean(hit.to(logp.dtype), m).detach()

    return torch.where(m, loss, torch.zeros_like(loss)), metrics


@POLICY_LOSSES.register("vanilla_pg")
def vanilla_pg(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
) -> tuple[Tensor, dict[str, Tensor]]:
    """REINFORCE: loss = -A * logp (no ratio, no clipping; on-policy only).

    Returns ratio_mean / approx_kl too so logs have the same keys as ppo_clip;
    clip_frac is always 0.
    """
    m = mask.bool()
    adv = advantages.unsqueeze(-1).to(logp.dtype)
    loss = -adv * logp
    log_ratio = (logp - old_logp).detach().clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    metrics = _ratio_metrics(log_ratio, torch.exp(log_ratio), m)
    metrics["clip_frac"] = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return torch.where(m, loss, torch.zeros_like(loss)), metrics
