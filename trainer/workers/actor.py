"""The actor: owns the trainable policy, computes log-probs, runs SFT and the RL update."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import torch

from data.curriculum import staged_pool
from trainer.algorithms import aggregate, get_kl, get_policy_loss
from trainer.algorithms.dpo import dpo_nll_loss
from trainer.algorithms.policy_loss import CLIP_PARAMS, PolicyInputs
from trainer.algorithms.rollout_correction import correct_mismatch
from trainer.batch import TrainBatch, plan_micro_batches
from trainer.config import ActorConfig, AlgorithmConfig
from trainer.gc_pause import gc_paused
from trainer.strategies.base import adamw
from trainer.strategies.factory import make_strategy
from trainer.modeling import chunked_head_calls, load_causal_lm, response_logprobs, use_prompt_cache


def freeze_parameters(model: torch.nn.Module, prefixes: list[str]) -> list[str]:
    """Stop gradients for parameters whose names start with any prefix; returns the frozen names."""
    frozen = [name for name, p in model.named_parameters() if any(name.startswith(x) for x in prefixes)]
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    return frozen


class ActorWorker:
    """One rank of the actor. With `actor.strategy=torch` it trains alone; with a sharded strategy
    the controller starts `world_size` of them and calls `init_distributed` on all at once, and
    every method is then called on every rank with the same arguments (results from rank 0)."""

    @gc_paused()  # imports and the model build: trainer/gc_pause.py
    def __init__(self, model_path: str, *, actor: ActorConfig, algorithm: AlgorithmConfig, dtype: str, seed: int, max_len: int,
                 rank: int = 0, world_size: int = 1):
        torch.set_num_threads(actor.threads)
        torch.manual_seed(seed)
        self.cfg, self.algo, self.seed, self.max_len = actor, algorithm, seed, max_len
        self.rank, self.world_size = rank, world_size
        self.model = load_causal_lm(model_path, dtype)
        self.lora = actor.lora.rank > 0
        if self.lora:
            from trainer.lora import add_lora

            add_lora(self.model, actor.lora)  # in place: the rest of the model is frozen
        if actor.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
            if self.lora:  # checkpointed blocks need an input that requires grad when the embeddings are frozen
                self.model.enable_input_require_grads()
        self.model.train()
        prefixes = list(actor.freeze or [])
        if actor.freeze_vision:
            from trainer.vision import vision_module_prefixes

            prefixes += vision_module_prefixes(self.model)
        self.frozen = freeze_parameters(self.model, prefixes)
        self.strategy = self._make_strategy() if actor.strategy == "torch" else None
        self.updates = 0

    def _make_strategy(self):
        actor = self.cfg
        return make_strategy(
            actor.strategy, self.model, lr=actor.lr, weight_decay=actor.weight_decay, betas=actor.betas,
            warmup_steps=actor.warmup_steps, reshard_after_forward=actor.reshard_after_forward,
            mixed_precision=actor.mixed_precision, cpu_offload=actor.cpu_offload,
            zero_stage=actor.zero_stage, grad_clip=actor.grad_clip, checkpoint_frozen=not self.lora,
        )

    def rendezvous_address(self) -> tuple[str, int]:
        from trainer.strategies.distributed import rendezvous_address

        return rendezvous_address()

    def init_distributed(self, host: str, port: int) -> None:
        from trainer.strategies.distributed import init_distributed

        init_distributed(self.rank, self.world_size, host, port)
        self.strategy = self._make_strategy()

    @property
    def forward_model(self) -> torch.nn.Module:
        """What forward passes go through: the HF model, or DeepSpeed's engine around it."""
        return self.strategy.model if self.strategy is not None else self.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _micro_batches(self, batch: TrainBatch, world_size: int) -> list[list[list[int]]]:
        return plan_micro_batches(batch.sequence_lengths(), micro_batch_size=self.cfg.micro_batch_size,
                                  max_tokens=self.cfg.max_tokens_per_micro_batch, world_size=world_size)

    @property
    def logits_chunk_size(self) -> int:
        return int(self.cfg.logits_chunk_size or 0)

    def share_prompts(self, batch: TrainBatch) -> bool:
        """The prompt-once forward (actor.share_prompt_forward): one worker only, as sharded strategies gather
        parameters per forward call and ranks would differ in calls."""
        cfg = self.cfg
        return (cfg.strategy == "torch" and not cfg.gradient_checkpointing
                and use_prompt_cache(cfg.share_prompt_forward, batch, self.device))

    @torch.no_grad()
    def log_probs(self, batch: TrainBatch, temperature: float) -> torch.Tensor:
        # Every rank computes the whole batch (same plan, so sharded forwards stay in step).
        out = torch.zeros(batch.response_mask.shape)
        for rows in self._micro_batches(batch, world_size=1)[0]:
            micro = batch.select(rows)
            logp, _ = response_logprobs(self.forward_model, micro, temperature, chunk_size=self.logits_chunk_size,
                                        share_prompts=self.share_prompts(micro))
            out[rows, : logp.shape[1]] = logp.cpu()
        return out

    def update(self, batch: TrainBatch, temperature: float, correct: bool = False) -> dict[str, float]:
        """PPO-style update over mini-batches; returns token-weighted metric means. Without
        `batch.old_logprobs` the update must make one optimiser step (or run in bypass mode): its forward gives
        them (detached), and `logp_mismatch` (mean |rollout - actor| log-prob per token) is measured on the way.
        `correct`: apply algorithm.rollout_correction (the controller sets it in decoupled mode, past the mismatch
        budget and for the stale batches of async rollout; bypass mode corrects through the ratio regardless)."""
        algo, cfg = self.algo, self.cfg
        correction = algo.rollout_correction
        bypass = correction.mode == "bypass"
        policy_loss = get_policy_loss(algo.policy_loss)
        # The clip range goes to the losses that take it; the rest are the loss's own hyperparameters.
        loss_params = {key: getattr(algo, key) for key in CLIP_PARAMS
                       if (key in policy_loss.params or policy_loss.accepts_any_param) and getattr(algo, key) is not None}
        loss_params.update(algo.policy_loss_params or {})
        kl_fn = get_kl(algo.kl_estimator) if algo.kl_coef > 0 else None
        mini = min(cfg.mini_batch_size, len(batch))
        if batch.old_logprobs is None and not bypass and (cfg.epochs > 1 or mini < len(batch)):
            raise ValueError("an update of several optimiser steps needs the batch's old log-probs")
        if (bypass or correct) and batch.rollout_logprobs is None:
            raise ValueError("rollout correction needs the rollout engine's log-probs in the batch")
        generator = torch.Generator().manual_seed(self.seed + self.updates)
        sums: dict[str, float] = defaultdict(float)
        tokens_seen, grad_norms, skipped = 0.0, [], []
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(batch), generator=generator)
            for start in range(0, len(batch), mini):
                nonfinite = []  # this rank's micro-batches whose loss was not finite
                mini_batch = batch.select(order[start : start + mini])
                totals = dict(
                    num_tokens=mini_batch.response_mask.sum().clamp(min=1),
                    num_seqs=len(mini_batch),
                    max_len=algo.loss_max_len or self.max_len,
                )
                # Each rank takes a contiguous shard; all ranks run the same number of micro-batches
                # (sharded strategies communicate in every backward), padding with zero-weight ones.
                plans = self._micro_batches(mini_batch, self.world_size)
                # ZeRO-3 gathers the LM head's weight at each chunked head call: every rank makes as many
                # as the rank with the most response tokens in that micro-batch.
                head_calls = [max(chunked_head_calls(mini_batch.select(plan[i] or [0]), self.logits_chunk_size)
                                  for plan in plans) for i in range(len(plans[0]))]
                for micro_index, (rows, min_chunks) in enumerate(zip(plans[self.rank], head_calls)):
                    weight = 1.0 if rows else 0.0
                    # Losses combine log-probs (on the model's device) with the batch's per-token tensors.
                    micro = mini_batch.select(rows or [0]).to(self.device)
                    mask = micro.response_mask
                    logp, entropy = response_logprobs(self.forward_model, micro, temperature, with_entropy=True,
                                                      chunk_size=self.logits_chunk_size, min_chunks=min_chunks,
                                                      share_prompts=self.share_prompts(micro))
                    # The proximal policy: the old log-probs, or (one optimiser step, or bypass mode) this forward's.
                    proximal = micro.old_logprobs if micro.old_logprobs is not None else logp.detach()
                    if micro.old_logprobs is None and micro.rollout_logprobs is not None:
                        gap = (micro.rollout_logprobs - proximal).abs() * mask
                        sums["logp_mismatch"] += float(gap.sum()) * weight
                    is_weights, loss_mask = None, mask
                    if correct or bypass:
                        # Bypass: the loss's ratio is over the rollout's log-probs, already the correction.
                        is_weights, loss_mask, correction_sums = correct_mismatch(
                            proximal - micro.rollout_logprobs, mask, correction, apply_weights=not bypass)
                        for key, value in correction_sums.items():
                            sums[key] += value * weight
                    inputs = PolicyInputs(micro.rollout_logprobs if bypass else proximal, micro.advantages, loss_mask,
                                          micro.rollout_logprobs, micro.ref_logprobs)
                    token_loss, loss_metrics = policy_loss(logp, inputs, **loss_params)
                    if is_weights is not None:
                        token_loss = token_loss * is_weights
                    loss = aggregate(token_loss, loss_mask, algo.loss_agg, **totals)
                    n_tok = float(mask.sum()) * weight
                    if kl_fn is not None:
                        kl = kl_fn(logp, micro.ref_logprobs)
                        loss = loss + algo.kl_coef * aggregate(kl, loss_mask, algo.loss_agg, **totals)
                        sums["kl"] += float((kl.detach() * mask).sum()) * weight
                    loss = loss * weight
                    if not torch.isfinite(loss):
                        nonfinite.append(micro_index)
                    # Sharded strategies average gradients over ranks; each rank holds 1/world of the sum.
                    self.strategy.backward(loss * self.world_size)
                    sums["policy_loss"] += float(loss.detach())
                    sums["entropy"] += float((entropy.detach() * mask).sum()) * weight
                    for key, value in loss_metrics.items():
                        sums[key] += float(value) * n_tok
                    tokens_seen += n_tok
                norm = self.strategy.optimizer_step(cfg.grad_clip)
                if math.isfinite(norm):
                    grad_norms.append(norm)
                else:  # the strategy skipped the step
                    where = f" (rank {self.rank} loss not finite in micro-batches {nonfinite})" if nonfinite else ""
                    skipped.append(f"epoch {epoch} mini-batch {start // mini}: gradient norm {norm}{where}")
        self.updates += 1
        if self.world_size > 1:
            from trainer.strategies.distributed import all_reduce_sums

            totals = all_reduce_sums({**dict(sorted(sums.items())), "__tokens": tokens_seen})
            tokens_seen = totals.pop("__tokens")
            sums = totals
        optimizer_steps = len(grad_norms)
        metrics = {k: v / max(tokens_seen, 1.0) for k, v in sums.items() if k != "policy_loss"}
        metrics["policy_loss"] = sums["policy_loss"] / max(optimizer_steps + len(skipped), 1)
        metrics["grad_norm"] = sum(grad_norms) / optimizer_steps if optimizer_steps else float("nan")
        metrics["optimizer_steps"] = float(optimizer_steps)
        metrics["skipped_steps"] = float(len(skipped))
        metrics["lr"] = self.strategy.optimizer.param_groups[0]["lr"]
        metrics["skipped"] = skipped  # why, for the controller's log line (not a metric)
        return metrics

    def sft(self, prompts: list[list[int]], targets: list[list[int]], *, steps: int, batch_size: int,
            lr: float, weight_decay: float, pad_id: int, log_every: int = 50,
            media: list | None = None, stages: list[int] | None = None,
            stage_steps: int = 0, loss_agg: str = "token_mean") -> list[tuple[int, float]]:
        """Cold-start SFT: maximise the log-prob of each target given its prompt. Returns (step, loss) points.

        With `stages` (an integer per sample), step s draws only from samples whose stage is at most
        the (s // stage_steps)-th smallest stage value (counting from 0), so one more value comes in
        every `stage_steps` steps. Every rank trains on the same batch, so sharded
        strategies give the single-worker result."""
        if self.cfg.strategy == "torch":
            trainable = [p for p in self.model.parameters() if p.requires_grad]
            optimizer = adamw(self.model, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), fused=True)

            def backward_and_step(loss: torch.Tensor) -> None:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        else:
            # Sharded parameters: train through the strategy, at the SFT learning rate. The RL stage
            # starts a fresh actor from the saved SFT model, so this optimiser state is not reused.
            for group in self.strategy.optimizer.param_groups:
                group.update(lr=lr, weight_decay=weight_decay)

            def backward_and_step(loss: torch.Tensor) -> None:
                self.strategy.backward(loss)
                self.strategy.optimizer_step(self.cfg.grad_clip)
                for group in self.strategy.optimizer.param_groups:
                    group["lr"] = lr  # undo the RL warm-up schedule
        generator = torch.Generator().manual_seed(self.seed)
        curve, running = [], []
        for step in range(steps):
            pool = staged_pool(stages, step, stage_steps) if stages else range(len(prompts))
            rows = [pool[i] for i in torch.randint(len(pool), (batch_size,), generator=generator).tolist()]
            batch = TrainBatch.from_sequences([prompts[i] for i in rows], [targets[i] for i in rows], pad_id,
                                              media=[media[i] for i in rows] if media else None).to(self.device)
            logp, _ = response_logprobs(self.forward_model, batch, temperature=1.0, chunk_size=self.logits_chunk_size)
            loss = aggregate(-logp, batch.response_mask, loss_agg)
            backward_and_step(loss)
            running.append(float(loss.detach()))
            # The first step alone too, so a short run's curve still shows where the loss started.
            if step == 0 or (step + 1) % log_every == 0 or step + 1 == steps:
                curve.append((step + 1, sum(running) / len(running)))
                running = []
        return curve

    def dpo_step(self, chosen: TrainBatch, rejected: TrainBatch, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
                 *, beta: float, nll_coef: float) -> dict[str, float]:
        """One optimiser step of DPO (+ NLL on the chosen responses); reference inputs are sequence log-probs."""
        chosen, rejected = chosen.to(self.device), rejected.to(self.device)
        ref_chosen, ref_rejected = ref_chosen.to(self.device), ref_rejected.to(self.device)
        chosen_logp, _ = response_logprobs(self.forward_model, chosen, temperature=1.0,
                                           chunk_size=self.logits_chunk_size)
        rejected_logp, _ = response_logprobs(self.forward_model, rejected, temperature=1.0,
                                             chunk_size=self.logits_chunk_size)
        loss, metrics = dpo_nll_loss(
            (chosen_logp * chosen.response_mask).sum(-1), (rejected_logp * rejected.response_mask).sum(-1),
            ref_chosen, ref_rejected, chosen_logp, chosen.response_mask, nll_coef=nll_coef, beta=beta,
        )
        self.strategy.backward(loss)
        grad_norm = self.strategy.optimizer_step(self.cfg.grad_clip)
        out = {k: float(v) for k, v in metrics.items()}
        out.update(loss=float(loss.detach()), grad_norm=grad_norm)
        return out

    @property
    def lora_settings(self) -> dict | None:
        """actor.lora as a checkpoint records it (None without LoRA)."""
        return asdict(self.cfg.lora) if self.lora else None

    def full_weights(self, adapters: dict[str, torch.Tensor] | None = None):
        """(name, tensor) pairs of the whole model under the base model's names, one at a time (with LoRA: the
        adapters merged in, as the rollout engines and saved models take them; `adapters` then collects the
        adapters' own tensors on the way)."""
        if self.lora:
            from trainer.lora import merged_weights

            return merged_weights(self.strategy.full_weights(), self.model, adapters)
        return self.strategy.full_weights()

    def weights(self) -> dict[str, torch.Tensor] | None:
        """The whole model as CPU copies on rank 0 (None on the others); every rank must be called, and each
        copies (the object_store weight sync, and tests)."""
        state = {name: tensor.to("cpu", copy=True) for name, tensor in self.full_weights()}
        return state if self.rank == 0 else None

    def weight_layout(self) -> list:
        """Names, shapes and dtypes of the weights a sync sends (collective for sharded strategies)."""
        from trainer.rollout.weight_sync import describe

        return describe(self.full_weights())

    def host(self) -> str:
        import socket

        return socket.gethostname()

    def open_weight_sync(self, host: str, port: int, world_size: int, layout: list, bucket_bytes: int,
                         shared_file: str | None = None) -> None:
        """Rank 0 joins the actor->rollout sync group as its sender (rollout.weight_sync collective or
        shared_memory: then it first creates the shared buffer file)."""
        from trainer.rollout.weight_sync import (BucketChannel, SyncGroup, buffer_bytes, create_shared_file,
                                                 plan_buckets)

        if self.rank != 0:
            return
        buckets = plan_buckets(layout, bucket_bytes)
        if shared_file is not None:
            create_shared_file(shared_file, buffer_bytes(buckets))
        self.weight_channel = BucketChannel(SyncGroup(host, port, rank=0, world_size=world_size), buckets,
                                            shared_file)

    def send_weights(self) -> None:
        """Rank 0 sends the buckets to the rollout engines."""
        self._gather_to_rank0(lambda tensors: self.weight_channel.send(tensors))

    def save_pretrained(self, out_dir: str, file_bytes: int = 1 << 30) -> None:
        """A Hugging Face folder of the current weights; sharded strategies write it from rank 0 as the weights
        are gathered, in safetensors files of at most `file_bytes`."""
        if self.world_size == 1 and self.cfg.strategy == "torch" and not self.lora:
            self.model.save_pretrained(out_dir)
            return
        from trainer.model_files import save_model_folder

        adapters: dict[str, torch.Tensor] = {}  # with LoRA: collected on the way, for peft
        self._gather_to_rank0(lambda tensors: save_model_folder(self.model, tensors, out_dir, file_bytes), adapters)
        if self.lora and self.rank == 0:
            from trainer.lora import save_adapter

            save_adapter(self.model, Path(out_dir) / "lora_adapter", adapters)

    def _gather_to_rank0(self, consume, adapters: dict[str, torch.Tensor] | None = None) -> None:
        """Every rank gathers the full weights one tensor at a time (sharded strategies need all ranks for
        each); rank 0 hands them to `consume`."""
        tensors = self.full_weights(adapters)
        try:
            if self.rank == 0:
                consume(tensors)
        finally:
            for _ in tensors:  # the other ranks, and rank 0 after `consume` failed: keep the gathers in step
                pass

    def save_checkpoint(self, folder: str) -> dict:
        """Every rank writes its part of the model and optimiser state into `folder` (collective); returns the
        small state the controller keeps."""
        small = self.strategy.save_shards(folder)
        # With LoRA the shards hold the adapters only, so the settings go with them.
        return {**small, "updates": self.updates, "world_size": self.world_size, "strategy": self.cfg.strategy,
                "lora": self.lora_settings}

    def load_checkpoint(self, folder: str, small: dict) -> None:
        if (small["strategy"] == "deepspeed") != (self.cfg.strategy == "deepspeed"):
            raise ValueError(f"{folder} holds actor.strategy={small['strategy']} state (DeepSpeed keeps its own "
                             f"format): resume with that strategy, not {self.cfg.strategy}")
        if not self.strategy.reshardable and small["world_size"] != self.world_size:
            raise ValueError(f"{folder} was written by {small['world_size']} {small['strategy']} ranks; this run has "
                             f"{self.world_size}: resume a {self.cfg.strategy} run with the same resources.actor.count")
        if (small.get("lora") or None) != self.lora_settings:
            raise ValueError(f"{folder} holds actor.lora={small.get('lora')}; this run has "
                             f"{self.lora_settings}: resume with the same actor.lora")
        self.strategy.load_shards(folder, small)
        self.updates = small["updates"]
