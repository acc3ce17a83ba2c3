"""The one batch type that crosses worker boundaries.

Sequences are `prompt + response`, right-padded, so position ids are plain
0..L-1 in every row, exactly as the rollout engine saw them. Per-token values
(log-probs, masks) live in a response-aligned [B, R] layout: column j is the
j-th response token of each row.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch


@dataclass
class TrainBatch:
    input_ids: torch.Tensor  # [B, L] long
    attention_mask: torch.Tensor  # [B, L]
    prompt_lens: torch.Tensor  # [B] long
    response_lens: torch.Tensor  # [B] long
    response_mask: torch.Tensor  # [B, R] float, 1 on real response tokens
    advantages: torch.Tensor | None = None  # [B]
    old_logprobs: torch.Tensor | None = None  # [B, R] policy before this update
    ref_logprobs: torch.Tensor | None = None  # [B, R] frozen reference
    rollout_logprobs: torch.Tensor | None = None  # [B, R] as the rollout engine reported
    media: list | None = None  # per row: the prompt's images (trainer.vision.Media) or None
    extras: dict = field(default_factory=dict)

    @classmethod
    def from_sequences(
        cls, prompts: list[list[int]], responses: list[list[int]], pad_id: int,
        loss_masks: list[list[int] | None] | None = None, media: list | None = None,
    ) -> "TrainBatch":
        """Right-padded prompt+response rows; `loss_masks` zero out response tokens the policy did not write."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
        width = max(lengths)
        resp_width = max(1, max(len(r) for r in responses))
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        response_mask = torch.zeros((len(prompts), resp_width))
        for row, (prompt, response) in enumerate(zip(prompts, responses)):
            if not prompt:
                raise ValueError(f"row {row}: empty prompt")
            input_ids[row, : lengths[row]] = torch.tensor(prompt + response)
            attention_mask[row, : lengths[row]] = 1
            mask = loss_masks[row] if loss_masks is not None and loss_masks[row] is not None else None
            if mask is not None and len(mask) != len(response):
                raise ValueError(f"row {row}: loss mask has {len(mask)} entries for {len(response)} response tokens")
            response_mask[row, : len(response)] = torch.tensor(mask, dtype=torch.float32) if mask is not None else 1
        return cls(
            input_ids=input_ids,
            attention_mask=attention_mask,
            prompt_lens=torch.tensor([len(p) for p in prompts]),
            response_lens=torch.tensor([len(r) for r in responses]),
            response_mask=response_mask,
            media=media if media is not None and any(m is not None for m in media) else None,
        )

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @staticmethod
    def per_token(values: list[list[float]], width: int) -> torch.Tensor:
        """Right-pad ragged per-token lists into the [B, R] layout."""
        out = torch.zeros((len(values), width))
        for row, row_values in enumerate(values):
            out[row, : len(row_values)] = torch.tensor(row_values, dtype=torch.float32)
        return out

    def response_positions(self) -> torch.Tensor:
        """[B, R] index of each response token in input_ids (clamped inside the row for padding)."""
        width = self.response_mask.shape[1]
        positions = self.prompt_lens.unsqueeze(1) + torch.arange(width, device=self.prompt_lens.device).unsqueeze(0)
        return positions.clamp(max=self.input_ids.shape[1] - 1)

    def select(self, rows: torch.Tensor | slice | list[int]) -> "TrainBatch":
        """A sub-batch, trimmed to its own longest sequence and response."""
        if isinstance(rows, slice):
            rows = torch.arange(len(self))[rows]
        rows = torch.as_tensor(rows, dtype=torch.long)
        width = int((self.prompt_lens[rows] + self.response_lens[rows]).max())
        resp_width = max(1, int(self.response_lens[rows].max()))
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, torch.Tensor):
                continue
            value = value[rows]
            if f.name in ("input_ids", "attention_mask"):
                value = value[:, :width]
            elif value.dim() == 2:
                value = value[:, :resp_width]
            picked[f.name] = value
        if self.media is not None:
            picked["media"] = [self.media[i] for i in rows.tolist()]
        return replace(self, **picked)

    def to(self, device) -> "TrainBatch":
        """The tensors moved to `device` (media stay: forward_inputs moves them)."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)

    def num_response_tokens(self) -> int:
        return int(self.response_mask.sum())

    def sequence_lengths(self) -> list[int]:
        """Prompt + response tokens of each row (a sub-batch's width is its longest row's)."""
        return (self.prompt_lens + self.response_lens).tolist()


def token_budget_groups(rows: list[int], lengths: list[int], max_tokens: int) -> list[list[int]]:
    """`rows` in groups whose padded size (rows x longest row) stays within max_tokens.

    Rows go longest first, so each group holds rows of similar length and short rows are not padded
    to a long one; a row longer than the budget is a group of its own.
    """
    if max_tokens <= 0:
        raise ValueError(f"actor.max_tokens_per_micro_batch={max_tokens} must be positive")
    groups: list[list[int]] = []
    for row in sorted(rows, key=lambda r: -lengths[r]):  # stable: equal lengths keep their order
        # The group's first row is its longest, so the padded size with this row is count x that length.
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= max_tokens:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def plan_micro_batches(lengths: list[int], *, micro_batch_size: int, max_tokens: int | None = None,
                       world_size: int = 1) -> list[list[list[int]]]:
    """Per data-parallel rank, the rows of each of its micro-batches, for a mini-batch of rows of `lengths`.

    Rank r takes the r-th contiguous shard of ceil(n / world_size) rows. The shard splits into
    micro_batch_size rows at a time, or with max_tokens into token_budget_groups (micro_batch_size is
    then ignored). Every rank gets the same number of micro-batches, ranks with fewer padded with []
    (a zero-weight micro-batch), because sharded strategies communicate in every forward and backward.
    Every rank can compute every rank's plan, so no communication is needed for it.
    """
    n = len(lengths)
    size = -(-n // world_size)
    plans = []
    for rank in range(world_size):
        shard = list(range(min(rank * size, n), min((rank + 1) * size, n)))
        if max_tokens is not None:
            plans.append(token_budget_groups(shard, lengths, max_tokens))
        else:
            plans.append([shard[i : i + micro_batch_size] for i in range(0, len(shard), micro_batch_size)])
    count = max(len(plan) for plan in plans)
    return [plan + [[] for _ in range(count - len(plan))] for plan in plans]
