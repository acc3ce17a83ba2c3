"""Small per-token tensor helpers shared by losses and workers."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def logprobs_from_logits(logits: Tensor, labels: Tensor, *, chunk_size: int | None = 8) -> Tensor:
    """log p(labels) from logits [B, T, V] and labels [B, T] -> float32 [B, T].

    Works in float32 even for bf16 logits (bf16 log-softmax loses ~2 digits, which
    biases importance ratios). Rows are processed chunk_size at a time so only one
    float32 chunk of the vocabulary-sized tensor exists at once.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} vs labels {tuple(labels.shape)}")
    step = logits.shape[0] if not chunk_size else chunk_size
    out = []
    for i in range(0, logits.shape[0], max(step, 1)):
        chunk = logits[i : i + step].float()
        picked = chunk.gather(-1, labels[i : i + step].unsqueeze(-1)).squeeze(-1)
        # log_softmax(x)[y] = x[y] - logsumexp(x); avoids a second [.., V] tensor.
        out.append(picked - torch.logsumexp(chunk, dim=-1))
    return torch.cat(out, dim=0)


def entropy_from_logits(logits: Tensor, *, chunk_size: int | None = 8) -> Tensor:
    """Entropy of softmax(logits) over the last dim, float32 [B, T].

    H = logsumexp(x) - sum_v softmax(x)_v * x_v.
    """
    step = logits.shape[0] if not chunk_size else chunk_size
    out = []
    for i in range(0, logits.shape[0], max(step, 1)):
        chunk = logits[i : i + step].float()
        p = torch.softmax(chunk, dim=-1)
        out.append(torch.logsumexp(chunk, dim=-1) - (p * chunk).sum(-1))
    return torch.cat(out, dim=0)


def chunked_logprobs_entropy(
    hidden: Tensor, head: Callable[[Tensor], Tensor], labels: Tensor, *, chunk_size: int,
    temperature: float = 0.0, with_entropy: bool = False, min_chunks: int = 0,
) -> tuple[Tensor, Tensor | None]:
    """log p(labels) and entropy, float32 [N], from hidden states [N, H] through `head` (-> logits [.., V]).

    Same maths as logprobs_from_logits / entropy_from_logits on head(hidden) / temperature
    (temperature <= 0: unscaled), but only `chunk_size` rows of logits exist at once. When
    autograd records over several chunks, each is checkpointed: backward recomputes that chunk's
    logits instead of keeping all of them, so the graph holds [N, H] inputs, not [N, V] logits.
    `min_chunks` calls `head` at least that many times (the extra calls on zero rows): DeepSpeed ZeRO-3
    gathers the head's weight at every call, so data-parallel ranks must make the same number.
    """
    if hidden.dim() != 2 or hidden.shape[:1] != labels.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} vs labels {tuple(labels.shape)}: expected [N, H] and [N]")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size={chunk_size} must be positive")

    def chunk_stats(h: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = head(h).float()
        if temperature > 0:
            logits = logits / temperature
        lse = torch.logsumexp(logits, dim=-1)
        logp = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1) - lse
        if not with_entropy:
            return logp, logp.new_zeros(())
        return logp, lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)

    logps, entropies = [], []
    chunks = max(-(-hidden.shape[0] // chunk_size), min_chunks)
    # One chunk: keep its logits for backward rather than run the head again (the same peak as the
    # forward's chunk; SmolLM2's 49k-token head on a few hundred rows is about 0.2 s a recompute).
    record = torch.is_grad_enabled() and chunks > 1
    for start in range(0, chunks * chunk_size, chunk_size):
        h, y = hidden[start : start + chunk_size], labels[start : start + chunk_size]  # empty past the end
        logp, entropy = checkpoint(chunk_stats, h, y, use_reentrant=False) if record else chunk_stats(h, y)
        logps.append(logp)
        entropies.append(entropy)
    if not logps:
        empty = hidden.new_zeros((0,), dtype=torch.float32)
        return empty, (empty if with_entropy else None)
    return torch.cat(logps), (torch.cat(entropies) if with_entropy else None)


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    # where() rather than x*mask so inf/nan at padded positions cannot leak.
    m = mask.bool()
    z = torch.where(m, x, torch.zeros_like(x))
    return z.sum() if dim is None else z.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over positions where mask is set; 0 when nothing is set."""
    n = mask.bool().sum() if dim is None else mask.bool().sum(dim)
    return masked_sum(x, mask, dim) / n.clamp(min=1).to(x.dtype)
