"""What rollout engines take and return, engine-independent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SamplingSpec:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 64
    stop_token_ids: tuple[int, ...] = ()
    seed: int = 0
    "Base seed for this call; prompt i uses seed + i so results do not depend on batching."

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Completion:
    prompt_index: int
    "Index of the prompt (in the call's prompt list) this completion answers."
    token_ids: list[int]
    "Response tokens, including the stop token when generation ended on one."
    logprobs: list[float]
    "Log-probability of each response token under the rollout engine (temperature-scaled)."
    finished: bool
    "False when generation hit max_new_tokens."
    loss_mask: list[int] | None = None
    "Per response token, 1 where the policy produced it (multi-turn responses interleave simulator turns)."
    sample: int = 0
    "Which of the prompt's n completions this is (0 to n - 1)."
