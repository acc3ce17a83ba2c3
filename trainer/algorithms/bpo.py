"""Bi-mode policy optimisation (R-4B's BPO).

Every prompt is rolled out g times in thinking mode and g times in non-thinking mode, and the
2g completions form ONE group: each completion is compared with both modes, so the policy
learns which mode pays off for that prompt, not just how to do well inside a mode. The rollouts
come from `RolloutCollector.round` (one call per `rollout.modes` entry, one group per prompt) and
the advantages from the ordinary group estimator; this module holds the per-mode metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

_OPEN, _CLOSE = "<think>", "</think>"


def mode_metrics(
    rewards: Sequence[float] | Tensor, lengths: Sequence[float] | Tensor, modes: Sequence[str]
) -> dict[str, float]:
    """Per-mode means: "bpo/<mode>/reward_mean" and "bpo/<mode>/length_mean" for each mode present."""
    r = torch.as_tensor(rewards, dtype=torch.float64).flatten().cpu()
    n = torch.as_tensor(lengths, dtype=torch.float64).flatten().cpu()
    if not (len(r) == len(n) == len(modes)):
        raise ValueError(f"got {len(r)} rewards, {len(n)} lengths and {len(modes)} modes")
    out: dict[str, float] = {}
    for m in sorted(set(modes)):
        sel = torch.tensor([x == m for x in modes])
        out[f"bpo/{m}/reward_mean"] = float(r[sel].mean())
        out[f"bpo/{m}/length_mean"] = float(n[sel].mean())
    return out


def _thinks(response: str) -> bool:
    start = response.find(_OPEN)
    if start >= 0:
        body = response[start + len(_OPEN) :]
        # An unclosed block (cut at the length limit) still counts: the model chose to think.
        body = body.split(_CLOSE, 1)[0]
    elif _CLOSE in response:
        # The template put <think> in the prompt, so the response starts inside the block.
        body = response.split(_CLOSE, 1)[0]
    else:
        return False
    return bool(body.strip())


def auto_think_share(responses: Sequence[str]) -> float:
    """Share of auto-mode responses that think: their <think> block has non-whitespace content.

    No block at all, or an empty one ("<think>\\n\\n</think>"), means no thinking. 0.0 for no
    responses so the metric is always loggable.
    """
    if not responses:
        return 0.0
    return sum(_thinks(r) for r in responses) / len(responses)
