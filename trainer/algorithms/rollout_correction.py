"""Correction for the gap between the rollout engine's log-probs and the trainer's.

The rollout engine samples from pi_rollout (another kernel, dtype or, with async rollout, older weights);
the loss assumes samples from the trainer's proximal policy pi_old. With log_ratio = log pi_old - log
pi_rollout per sampled token, truncated importance weights (TIS) reweight each token or sequence and
rejection drops tokens or sequences whose ratio left a band (Yao et al. 2025, "Your efficient RL framework
secretly brings you off-policy RL training"; Liu et al. 2025, "When speed kills stability").

Levels: "token" uses each token's own ratio; "sequence" uses the sequence's: for weights the product of
its token ratios (the unbiased sequence weight), for rejection their geometric mean (a length-free
average, so long sequences are not rejected for length alone).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .kl import LOG_RATIO_CLAMP

LEVELS = ("token", "sequence")


def _level(level: str, what: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"{what} level must be one of {', '.join(LEVELS)}, got {level!r}")
    return level


def correction_weights(log_ratio: Tensor, mask: Tensor, *, level: str, cap: float) -> Tensor:
    """Truncated importance weights [B, T]: min(pi_old / pi_rollout, cap) per token, or per sequence
    (the product of its token ratios, on each of its tokens); zero outside the mask, no gradient."""
    m = mask.to(log_ratio.dtype)
    if _level(level, "rollout_correction.weights") == "token":
        log_w = log_ratio
    else:
        log_w = (log_ratio * m).sum(-1, keepdim=True).expand_as(log_ratio)
    return (torch.exp(log_w.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)) * m).clamp(max=cap).detach()


def rejection_mask(log_ratio: Tensor, mask: Tensor, *, level: str, low: float, high: float) -> Tensor:
    """1.0 where a token is kept, 0.0 where its ratio (token level) or its sequence's geometric-mean ratio
    (sequence level) lies outside [low, high]; 0 outside the mask too."""
    if not 0 < low <= 1 <= high:
        raise ValueError(f"the rejection band must hold 1 (0 < low <= 1 <= high), got [{low}, {high}]")
    m = mask.to(log_ratio.dtype)
    if _level(level, "rollout_correction.reject") == "token":
        stat = log_ratio
    else:
        stat = ((log_ratio * m).sum(-1) / m.sum(-1).clamp(min=1)).unsqueeze(-1).expand_as(log_ratio)
    inside = (stat >= torch.log(torch.tensor(low))) & (stat <= torch.log(torch.tensor(high)))
    return (inside.to(log_ratio.dtype) * m).detach()


def mismatch_sums(log_ratio: Tensor, mask: Tensor, weights: Tensor | None, keep: Tensor | None) -> dict[str, float]:
    """Token sums (divide by the token count for means) of the mismatch and of what correction did:
    k3 estimate of KL(pi_rollout || pi_old), |log_ratio|, the weights, and the rejected tokens."""
    m = mask.to(log_ratio.dtype)
    lr = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    sums = {"mismatch/kl": float(((torch.exp(lr) - 1 - lr) * m).sum()),
            "mismatch/abs_log_ratio": float((lr.abs() * m).sum())}
    if weights is not None:
        sums["mismatch/is_weight_mean"] = float((weights * m).sum())
    if keep is not None:
        sums["mismatch/rejected_frac"] = float(((1 - keep) * m).sum())
    return sums


def correct_mismatch(log_ratio: Tensor, mask: Tensor, cfg, *, apply_weights: bool = True,
                     ) -> tuple[Tensor | None, Tensor, dict[str, float]]:
    """What algorithm.rollout_correction (`cfg`) does to one micro-batch: the importance weights to multiply
    the per-token loss by (None without cfg.weights, or with `apply_weights=False`), the loss mask less the
    rejected tokens, and the token sums of `mismatch_sums`."""
    use = cfg.weights if apply_weights else None
    weights = correction_weights(log_ratio, mask, level=use, cap=cfg.weight_cap) if use else None
    keep = (rejection_mask(log_ratio, mask, level=cfg.reject, low=cfg.reject_low, high=cfg.reject_high)
            if cfg.reject else None)
    loss_mask = mask if keep is None else mask * keep
    return weights, loss_mask, mismatch_sums(log_ratio, mask, weights, keep)
