"""Outcome-reward advantage estimators.

All take one scalar reward per sample, a group id per sample and the response mask [B, T], and return
advantages per sequence [B] or per token [B, T] (zero outside the mask). Group ids are arbitrary integers
in any order and groups may differ in size (dynamic sampling drops samples; BPO merges two rollout modes
of one prompt into one group).
"""

from __future__ import annotations

import torch
from torch import Tensor

from plugins.registry import Registry

# fn(rewards [B], group_index [B], response_mask [B, T], **params) -> advantages [B] or [B, T];
# params from algorithm.advantage_params.
ADVANTAGES = Registry("advantage estimator", args=3)


def _group_moments(rewards: Tensor, group_index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-sample float32 [B] (group size, group sum, group mean, unbiased group std).

    std is 0 for size-1 groups; callers zero those advantages anyway.
    """
    if rewards.dim() != 1 or rewards.shape != group_index.shape:
        raise ValueError(
            f"rewards and group_index must both be [B], got {tuple(rewards.shape)} "
            f"and {tuple(group_index.shape)}"
        )
    # Compact ids to 0..G-1 so sparse, negative or unsorted ids all work.
    _, inv = torch.unique(group_index, return_inverse=True)
    g = int(inv.max()) + 1 if inv.numel() else 0
    r = rewards.float()

    def per_group_sum(x: Tensor) -> Tensor:
        return torch.zeros(g, dtype=x.dtype, device=x.device).index_add_(0, inv, x)[inv]

    count = per_group_sum(torch.ones_like(r))
    total = per_group_sum(r)
    # A group of equal rewards has mean exactly its reward and std 0. Computed, float rounding leaves
    # ~1e-7 in both (eight rewards of 1.2), and dividing one by the other gave every member a GRPO
    # advantage of about 0.1 where there is no signal at all.
    low = torch.full((g,), float("inf"), device=r.device).scatter_reduce(0, inv, r, "amin")[inv]
    high = torch.full((g,), float("-inf"), device=r.device).scatter_reduce(0, inv, r, "amax")[inv]
    equal = low == high
    mean = torch.where(equal, r, total / count)
    std = torch.sqrt(per_group_sum((r - mean) ** 2) / (count - 1).clamp(min=1))
    return count, total, mean, std


@ADVANTAGES.register("grpo")
def grpo(
    rewards: Tensor,
    group_index: Tensor,
    response_mask: Tensor,
    *,
    eps: float = 1e-6,
    norm_by_std: bool = True,
) -> Tensor:
    """GRPO group-normalised advantage.

    A_i = (r_i - mean_g(r)) / (std_g(r) + eps), std unbiased (n-1).
    norm_by_std=False gives plain mean-centring A_i = r_i - mean_g(r) (Dr.GRPO).
    Size-1 groups get 0 (no baseline to compare against).
    """
    count, _, mean, std = _group_moments(rewards, group_index)
    adv = rewards.float() - mean
    if norm_by_std:
        adv = adv / (std + eps)
    adv = torch.where(count > 1, adv, torch.zeros_like(adv))
    return adv.to(rewards.dtype)


@ADVANTAGES.register("rloo")
def rloo(rewards: Tensor, group_index: Tensor, response_mask: Tensor, *, eps: float = 1e-6) -> Tensor:
    """RLOO leave-one-out baseline.

    A_i = r_i - (sum_g(r) - r_i) / (n_g - 1); size-1 groups get 0.
    """
    count, total, _, _ = _group_moments(rewards, group_index)
    r = rewards.float()
    adv = r - (total - r) / (count - 1).clamp(min=1)
    adv = torch.where(count > 1, adv, torch.zeros_like(adv))
    return adv.to(rewards.dtype)


@ADVANTAGES.register("reinforce_baseline")
def reinforce_baseline(
    rewards: Tensor,
    group_index: Tensor,
    response_mask: Tensor,
    *,
    eps: float = 1e-6,
    whiten: bool = False,
) -> Tensor:
    """REINFORCE with a batch-mean baseline; groups are ignored.

    A_i = r_i - mean_batch(r); with whiten=True, A_i /= (std_batch(r) + eps),
    std unbiased (a batch of one has std 0).
    """
    r = rewards.float()
    adv = r - r.mean()
    if whiten:
        std = r.std() if r.numel() > 1 else torch.zeros((), dtype=r.dtype, device=r.device)
        adv = adv / (std + eps)
    return adv.to(rewards.dtype)


def _whiten(values: Tensor, mask: Tensor, eps: float) -> Tensor:
    """(values - mean) / sqrt(var + eps) over the masked tokens of the whole batch (var unbiased), zero
    outside the mask."""
    m = mask.to(values.dtype)
    count = m.sum()
    if count < 2:
        raise ValueError(f"whitening over the batch needs at least 2 response tokens, got {int(count)}")
    mean = (values * m).sum() / count
    var = (((values - mean) ** 2) * m).sum() / (count - 1)
    return (values - mean) * torch.rsqrt(var + eps) * m


@ADVANTAGES.register("reinforce_plus_plus")
def reinforce_plus_plus(
    rewards: Tensor,
    group_index: Tensor,
    response_mask: Tensor,
    *,
    gamma: float = 1.0,
    eps: float = 1e-8,
) -> Tensor:
    """REINFORCE++ (Hu et al. 2025, arXiv:2501.03262), outcome reward only: per token [B, T].

    The reward sits on the last response token; token t's return is r * gamma^(tokens after t), counting
    only tokens inside the mask (masked spans, e.g. a simulator's turn, pass the return through). Returns
    are whitened over every response token of the batch (global normalisation, no groups).
    """
    mask = response_mask.float()
    after = mask.flip(-1).cumsum(-1).flip(-1) - mask  # response tokens after t
    returns = rewards.float().unsqueeze(-1) * torch.pow(torch.as_tensor(float(gamma)), after) * mask
    return _whiten(returns, mask, eps)


@ADVANTAGES.register("reinforce_plus_plus_baseline")
def reinforce_plus_plus_baseline(
    rewards: Tensor,
    group_index: Tensor,
    response_mask: Tensor,
    *,
    eps: float = 1e-8,
) -> Tensor:
    """REINFORCE++-baseline (Hu et al. 2025, arXiv:2501.03262): per token [B, T].

    r_i minus its group's mean (a size-1 group keeps r_i: there is no baseline), put on every response
    token and whitened over every response token of the batch.
    """
    count, _, mean, _ = _group_moments(rewards, group_index)
    centred = rewards.float() - torch.where(count > 1, mean, torch.zeros_like(mean))
    mask = response_mask.float()
    return _whiten(centred.unsqueeze(-1) * mask, mask, eps)


@ADVANTAGES.register("grpo_passk")
def grpo_passk(
    rewards: Tensor,
    group_index: Tensor,
    response_mask: Tensor,
    *,
    eps: float = 1e-6,
    norm_by_std: bool = True,
) -> Tensor:
    """GRPO for pass@k (Chen et al. 2025, arXiv:2503.19595): per sequence [B].

    Only each group's best completion gets an advantage, r_max - r_second (divided by the group's
    unbiased std + eps with norm_by_std); every other completion gets 0. Among tied best completions the
    first in batch order is the one (its advantage is then 0 anyway). Needs groups of 2 or more.
    """
    count, _, _, std = _group_moments(rewards, group_index)
    if bool((count < 2).any()):
        raise ValueError("grpo_passk needs at least 2 completions per group (rollout.n >= 2)")
    r = rewards.float()
    adv = torch.zeros_like(r)
    for group in torch.unique(group_index).tolist():
        rows = (group_index == group).nonzero().flatten()
        top = torch.topk(r[rows], 2)
        gap = top.values[0] - top.values[1]
        best = rows[top.indices[0]]
        adv[best] = gap / (std[best] + eps) if norm_by_std else gap
    return adv.to(rewards.dtype)
