"""Per-token estimators of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL").

Each takes logp, ref_logp [B, T] (log-probs of the sampled tokens) and returns [B, T].
"""

from __future__ import annotations

import torch
from torch import Tensor

from plugins.registry import Registry

KL_ESTIMATORS = Registry("KL estimator", args=2)

# exp(20) ~ 4.9e8: large enough to never bind on sane policies, small enough that
# exp() of a near-zero ref prob cannot overflow to inf and poison the loss.
LOG_RATIO_CLAMP = 20.0


@KL_ESTIMATORS.register("k1")
def k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp - ref_logp. Unbiased, high variance, can be negative."""
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = 0.5 * (logp - ref_logp)^2. Biased, low variance, non-negative."""
    return 0.5 * (logp - ref_logp) ** 2


@KL_ESTIMATORS.register("k3")
def k3(logp: Tensor, ref_logp: Tensor, *, clamp: float | None = LOG_RATIO_CLAMP) -> Tensor:
    """k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1. Unbiased, non-negative.

    The log-ratio is clamped to [-clamp, clamp] before exp (clamp=None disables).
    """
    log_ratio = ref_logp - logp
    if clamp is not None:
        log_ratio = log_ratio.clamp(-clamp, clamp)
    return torch.exp(log_ratio) - log_ratio - 1
