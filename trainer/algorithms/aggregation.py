"""Reduce per-token values [B, T] to a scalar loss.

num_tokens / num_seqs exist for gradient accumulation: pass the totals of the whole
mini-batch when calling on each micro-batch, and the micro-batch losses sum exactly
to the mini-batch loss (a per-micro-batch mean would weight short micro-batches up).
"""

from __future__ import annotations

from torch import Tensor

from plugins.registry import Registry

from .token_ops import masked_sum

AGGREGATIONS = Registry("loss aggregation", args=2)


def _num_seqs(values: Tensor, num_seqs: float | None) -> float:
    return values.shape[0] if num_seqs is None else num_seqs


@AGGREGATIONS.register("token_mean")
def token_mean(values: Tensor, mask: Tensor, *, num_tokens=None, num_seqs=None, max_len=None) -> Tensor:
    """sum(v * m) / num_tokens, num_tokens defaulting to sum(m) (at least 1)."""
    if num_tokens is None:
        num_tokens = mask.bool().sum().clamp(min=1).to(values.dtype)
    return masked_sum(values, mask) / num_tokens


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(values: Tensor, mask: Tensor, *, num_tokens=None, num_seqs=None, max_len=None) -> Tensor:
    """sum_i (sum_t v*m / len_i) / num_seqs; empty sequences contribute 0."""
    lens = mask.bool().sum(-1).clamp(min=1).to(values.dtype)
    return (masked_sum(values, mask, dim=-1) / lens).sum() / _num_seqs(values, num_seqs)


@AGGREGATIONS.register("seq_mean_token_sum")
def seq_mean_token_sum(values: Tensor, mask: Tensor, *, num_tokens=None, num_seqs=None, max_len=None) -> Tensor:
    """sum_i sum_t v*m / num_seqs."""
    return masked_sum(values, mask) / _num_seqs(values, num_seqs)


@AGGREGATIONS.register("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(values: Tensor, mask: Tensor, *, num_tokens=None, num_seqs=None, max_len=None) -> Tensor:
    """sum(v*m) / (num_seqs * max_len): a constant normaliser, so no length bias (Dr.GRPO)."""
    if max_len is None:
        raise ValueError("seq_mean_token_sum_norm needs max_len (the fixed response budget)")
    return masked_sum(values, mask) / (_num_seqs(values, num_seqs) * max_len)


def aggregate(
    values: Tensor,
    mask: Tensor,
    mode: str,
    *,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    max_len: int | None = None,
) -> Tensor:
    """Scalar loss from per-token values with the registered mode `mode`."""
    return AGGREGATIONS.get(mode)(values, mask, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
