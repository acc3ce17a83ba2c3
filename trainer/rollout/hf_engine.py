"""Transformers `generate` rollout engine: the fallback, and the deterministic one for tests.

Prompts are grouped by length so no batch needs padding: left padding would
shift position ids away from what the actor sees in training.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from trainer.algorithms import logprobs_from_logits
from trainer.rollout.sampling import Completion, SamplingSpec
from trainer.modeling import forward_inputs, load_causal_lm


class HFEngine:
    def __init__(self, model_path: str, *, dtype: str = "float32", seed: int = 0, **_unused):
        self.model = load_causal_lm(model_path, dtype)
        self.model.eval()
        self.seed = seed
        # A sampled image placeholder would claim image features that do not exist (and fail the next forward
        # pass): vision-language models never generate their vision markers.
        config = self.model.config
        self.suppressed = [getattr(config, key) for key in
                           ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
                           if getattr(config, key, None) is not None]

    @torch.no_grad()
    def generate(
        self, prompts: list[list[int]], spec: SamplingSpec, indices: list[int] | None = None,
        media: list | None = None,
    ) -> list[Completion]:
        """`media[i]` (trainer.vision.Media or None) holds prompt i's images."""
        indices = list(range(len(prompts))) if indices is None else indices
        media = media or [None] * len(prompts)
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, prompt in enumerate(prompts):
            by_length[len(prompt)].append(index)
        results: dict[int, list[Completion]] = {}
        stop = set(spec.stop_token_ids)
        for length, bucket in sorted(by_length.items()):
            # Seeded per bucket from the call seed, so re-running a step samples the same tokens.
            torch.manual_seed(spec.seed + indices[bucket[0]])
            input_ids = torch.tensor([prompts[i] for i in bucket], device=self.model.device)
            bucket_media = [media[i] for i in bucket]
            sampled = self.model.generate(
                input_ids=input_ids,
                **forward_inputs(self.model, input_ids.cpu(), bucket_media, self.model.device),
                attention_mask=torch.ones_like(input_ids),
                do_sample=not spec.greedy,
                temperature=spec.temperature if not spec.greedy else None,
                top_p=spec.top_p if not spec.greedy else None,
                top_k=(spec.top_k if spec.top_k > 0 else 0) if not spec.greedy else None,
                max_new_tokens=spec.max_new_tokens,
                num_return_sequences=spec.n,
                eos_token_id=list(stop) or None,
                pad_token_id=spec.stop_token_ids[0] if stop else 0,
                suppress_tokens=self.suppressed or None,
            )
            responses = sampled[:, length:].tolist()
            row_media = [m for m in bucket_media for _ in range(spec.n)]  # generate repeats each prompt n times
            logprobs = self._logprobs(sampled, length, spec.temperature, row_media)
            for row, tokens in enumerate(responses):
                end = next((i + 1 for i, t in enumerate(tokens) if t in stop), None)
                tokens = tokens[:end] if end is not None else tokens
                prompt_index = indices[bucket[row // spec.n]]
                results.setdefault(prompt_index, []).append(
                    Completion(
                        prompt_index=prompt_index,
                        token_ids=tokens,
                        logprobs=logprobs[row, : len(tokens)].tolist(),
                        finished=end is not None,
                    )
                )
        return [c for i in indices for c in results[i]]

    def _logprobs(self, sequences: torch.Tensor, prompt_length: int, temperature: float, media: list) -> torch.Tensor:
        # Rows that stopped early are padded after their end; their log-probs there are cut off by the caller.
        extra = forward_inputs(self.model, sequences.cpu(), media, self.model.device)
        logits = self.model(input_ids=sequences, **extra).logits[:, prompt_length - 1 : -1]
        if temperature > 0:
            logits = logits / temperature
        return logprobs_from_logits(logits, sequences[:, prompt_length:])

    def sleep(self) -> None:
        """Nothing to free: the HF engine keeps no cache between calls."""

    def wake_up(self) -> None:
        pass

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state_dict)

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
