"""The reference: frozen log-probs for the KL term (created only when the KL coefficient is > 0)."""

from __future__ import annotations

import torch

from trainer.batch import TrainBatch, plan_micro_batches
from trainer.config import ActorConfig
from trainer.gc_pause import gc_paused
from trainer.modeling import load_causal_lm, response_logprobs, use_prompt_cache


class ReferenceWorker:
    """Micro-batches, the LM-head chunking and the prompt-once forward follow the actor's settings
    (actor.micro_batch_size, actor.max_tokens_per_micro_batch, actor.logits_chunk_size,
    actor.share_prompt_forward)."""

    @gc_paused()  # imports and the model build: trainer/gc_pause.py
    def __init__(self, model_path: str, *, dtype: str, micro_batch_size: int, threads: int,
                 max_tokens_per_micro_batch: int | None = None,
                 logits_chunk_size: int = ActorConfig.logits_chunk_size,
                 share_prompt_forward: bool | None = ActorConfig.share_prompt_forward):
        torch.set_num_threads(threads)
        self.model = load_causal_lm(model_path, dtype).eval()
        self.model.requires_grad_(False)
        self.micro_batch_size = micro_batch_size
        self.max_tokens = max_tokens_per_micro_batch
        self.logits_chunk_size = logits_chunk_size
        self.share_prompt_forward = share_prompt_forward
        self.device = next(self.model.parameters()).device

    @torch.no_grad()
    def log_probs(self, batch: TrainBatch, temperature: float) -> torch.Tensor:
        out = torch.zeros(batch.response_mask.shape)
        plan = plan_micro_batches(batch.sequence_lengths(), micro_batch_size=self.micro_batch_size,
                                  max_tokens=self.max_tokens)[0]
        for rows in plan:
            micro = batch.select(rows)
            logp, _ = response_logprobs(self.model, micro, temperature, chunk_size=self.logits_chunk_size,
                                        share_prompts=use_prompt_cache(self.share_prompt_forward, micro, self.device))
            out[rows, : logp.shape[1]] = logp.cpu()
        return out
