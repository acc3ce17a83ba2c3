"""Offline DPO (+ NLL) on pairs the starting policy samples itself, ranked by the verifiable reward (Ovis2.5)."""

from __future__ import annotations

import numpy as np
import torch

from trainer.algorithms.dpo import build_preference_pairs
from trainer.batch import TrainBatch
from trainer.engines.sampling import SamplingSpec
from trainer.workers.group import WorkerGroup
from trainer.workers.reference import ReferenceWorker


def build_pairs(trainer) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt, chosen, rejected) token lists from `dpo.num_queries` prompts x `dpo.samples_per_query` samples."""
    cfg = trainer.cfg
    spec = SamplingSpec(
        n=cfg.dpo.samples_per_query, temperature=cfg.dpo.temperature, max_new_tokens=cfg.rollout.max_new_tokens,
        stop_token_ids=trainer.chat.stop_ids, seed=cfg.trainer.seed,
    )
    samples = []
    while len(samples) < cfg.dpo.num_queries:
        samples += trainer.sampler.next_batch()
    samples = samples[: cfg.dpo.num_queries]
    prompts = [trainer.encode_prompt(s) for s in samples]
    completions = trainer.generate_ids(prompts, spec)
    owners = [samples[c.prompt_index] for c in completions]
    texts = [trainer.response_text(s, c) for s, c in zip(owners, completions)]
    scored, _ = trainer.score(texts, owners)
    n = cfg.dpo.samples_per_query
    groups = [scored.scores[i * n : (i + 1) * n] for i in range(len(samples))]
    pairs = build_preference_pairs(groups, min_margin=cfg.dpo.min_margin)
    return [
        (prompts[completions[c].prompt_index], completions[c].token_ids, completions[r].token_ids) for c, r in pairs
    ]


def sequence_logprobs(group: WorkerGroup, batch: TrainBatch) -> torch.Tensor:
    token_logp = group.call("log_probs", batch, 1.0)[0]
    return (token_logp * batch.response_mask).sum(-1)


def run_dpo(trainer) -> dict:
    """Sample pairs from the starting policy, train DPO+NLL against it as the frozen reference."""
    cfg = trainer.cfg
    policy_path = trainer.base_model_path
    trainer.start_workers(policy_path)
    reference = WorkerGroup(
        "reference", ReferenceWorker, cfg.resources.reference, use_ray=trainer.use_ray,
        model_path=policy_path, dtype=cfg.model.dtype, micro_batch_size=cfg.actor.micro_batch_size,
        threads=cfg.actor.threads, max_tokens_per_micro_batch=cfg.actor.max_tokens_per_micro_batch,
        logits_chunk_size=cfg.actor.logits_chunk_size,
    )
    try:
        before = trainer.evaluate()
        pairs = build_pairs(trainer)
        if not pairs:
            raise RuntimeError("dpo: no query had a reward gap between its samples; nothing to prefer")
        pad = trainer.pad_id
        chosen_all = TrainBatch.from_sequences([p for p, _, _ in pairs], [c for _, c, _ in pairs], pad)
        rejected_all = TrainBatch.from_sequences([p for p, _, _ in pairs], [r for _, _, r in pairs], pad)
        ref_chosen, ref_rejected = sequence_logprobs(reference, chosen_all), sequence_logprobs(reference, rejected_all)
        generator = torch.Generator().manual_seed(cfg.trainer.seed)
        history = []
        for step in range(cfg.dpo.steps):
            rows = torch.randint(len(pairs), (min(cfg.dpo.batch_size, len(pairs)),), generator=generator)
            metrics = trainer.actor.call(
                "dpo_step", chosen_all.select(rows), rejected_all.select(rows), ref_chosen[rows], ref_rejected[rows],
                beta=cfg.dpo.beta, nll_coef=cfg.dpo.nll_coef,
            )[0]
            history.append(metrics)
            trainer.tracker.log(step + 1, {f"dpo/{k}": v for k, v in metrics.items()})
        trainer.sync_weights()
        after = trainer.evaluate()
    finally:
        reference.shutdown()
    last = history[-10:]
    summary = {
        "pairs": len(pairs), "steps": cfg.dpo.steps, "eval_before": before, "eval_after": after,
        "loss_last10": float(np.mean([m["loss"] for m in last])),
        "reward_accuracy_last10": float(np.mean([m["reward_accuracy"] for m in last])),
    }
    trainer.save_model(trainer.run_dir / "final_model")
    return summary
