"""Offline DPO (+ NLL) on pairs the starting policy samples itself, ranked by the verifiable reward (Ovis2.5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainer.algorithms.dpo import build_preference_pairs
from trainer.batch import TrainBatch
from trainer.evaluate import band_check
from trainer.rollout.sampling import SamplingSpec
from trainer.stages import STAGES, StageOutput
from trainer.workers.group import WorkerGroup


def build_pairs(trainer) -> tuple[TrainBatch, TrainBatch]:
    """Chosen and rejected rows (prompt + response, with the prompt's images) from `dpo.num_queries` prompts
    x `dpo.samples_per_query` samples, paired where the reward gap is at least `dpo.min_margin`."""
    cfg = trainer.cfg
    spec = SamplingSpec(
        n=cfg.dpo.samples_per_query, temperature=cfg.dpo.temperature, max_new_tokens=cfg.rollout.max_new_tokens,
        stop_token_ids=trainer.prompts.chat.stop_ids, seed=cfg.trainer.seed,
    )
    samples = []
    while len(samples) < cfg.dpo.num_queries:
        samples += trainer.sampler.next_batch()
    rollouts = trainer.collector.sample(samples[: cfg.dpo.num_queries], spec)
    n, items = cfg.dpo.samples_per_query, rollouts.items
    groups = [[r.score for r in items[i * n : (i + 1) * n]] for i in range(len(rollouts.samples))]
    pairs = build_preference_pairs(groups, min_margin=cfg.dpo.min_margin)
    if not pairs:
        raise RuntimeError("dpo: no query had a reward gap between its samples; nothing to prefer")
    media = trainer.prompts.media_of(rollouts.samples)
    pair_media = None if media is None else [media[items[c].group] for c, _ in pairs]
    prompts = [items[c].prompt_ids for c, _ in pairs]

    def rows(side: int) -> TrainBatch:
        completions = [items[pair[side]].completion for pair in pairs]
        batch = TrainBatch.from_sequences(prompts, [c.token_ids for c in completions], trainer.pad_id, media=pair_media)
        batch.rollout_logprobs = TrainBatch.per_token([c.logprobs for c in completions], batch.response_mask.shape[1])
        return batch

    return rows(0), rows(1)


def sequence_logprobs(group: WorkerGroup, batch: TrainBatch) -> torch.Tensor:
    token_logp = group.call("log_probs", batch, 1.0)[0]
    return (token_logp * batch.response_mask).sum(-1)


@STAGES.register("dpo")
def dpo_stage(trainer, stage_dir: Path, used_ids: set[str]) -> StageOutput:
    """Sample pairs from the starting policy, train DPO+NLL against it as the frozen reference."""
    cfg = trainer.cfg
    trainer.start_workers(trainer.base_model_path)
    # The starting policy is the frozen reference: with a KL term the run already has one from it.
    own_reference = trainer.workers.reference is None
    reference = trainer.workers.start_reference(trainer.base_model_path) if own_reference else trainer.workers.reference
    try:
        before = trainer.evaluate()
        chosen_all, rejected_all = build_pairs(trainer)
        ref_chosen, ref_rejected = sequence_logprobs(reference, chosen_all), sequence_logprobs(reference, rejected_all)
        generator = torch.Generator().manual_seed(cfg.trainer.seed)
        history = []
        for step in range(cfg.dpo.steps):
            rows = torch.randint(len(chosen_all), (min(cfg.dpo.batch_size, len(chosen_all)),), generator=generator)
            metrics = trainer.workers.actor.call(
                "dpo_step", chosen_all.select(rows), rejected_all.select(rows), ref_chosen[rows], ref_rejected[rows],
                beta=cfg.dpo.beta, nll_coef=cfg.dpo.nll_coef,
            )[0]
            history.append(metrics)
            trainer.tracker.log(step + 1, {f"dpo/{k}": v for k, v in metrics.items()})
        trainer.workers.sync_weights()
        after = trainer.evaluate()
    finally:
        if own_reference:
            reference.shutdown()
    last = history[-10:]
    inside, line = band_check(after["eval/acc"], cfg.trainer.expected_acc)
    if line:
        trainer.tracker.print(f"[dpo] held-out accuracy {100 * before['eval/acc']:.1f}% -> "
                              f"{100 * after['eval/acc']:.1f}%; {line}")
    summary = {
        "pairs": len(chosen_all), "steps": cfg.dpo.steps, "eval_before": before, "eval_after": after,
        "loss_last10": float(np.mean([m["loss"] for m in last])),
        "reward_accuracy_last10": float(np.mean([m["reward_accuracy"] for m in last])),
        **({"in_expected_band": inside} if line else {}),
    }
    return StageOutput(str(trainer.save_model(trainer.run_dir / "final_model")), None, summary)
