"""Data-filter stage: roll out n samples per prompt, keep prompts by a rule (M-Thinker's rejection sampling),
optionally attach English reference reasoning for the cross-lingual alignment reward."""

from __future__ import annotations

from pathlib import Path

from data.sources import save_jsonl
from rewards.cross_lingual import attach_english_references, build_english_references
from trainer.algorithms.filters import FILTER_RULES
from trainer.rollout.sampling import SamplingSpec
from trainer.stages import STAGES, StageOutput

CHUNK = 64


@STAGES.register("filter")
def filter_stage(trainer, out_dir: Path, used_ids: set[str]) -> StageOutput:
    """Keep prompts by `filter.rule`, skipping those an earlier filter stage already kept (`used_ids`);
    writes the kept prompts and the held-out set to `out_dir` for the next stages."""
    cfg, f = trainer.cfg, trainer.cfg.filter
    trainer.start_workers(trainer.base_model_path)
    samples = [s for s in trainer.train_samples if s.id is None or s.id not in used_ids]
    excluded = len(trainer.train_samples) - len(samples)
    samples = samples[: f.max_prompts] if f.max_prompts else samples
    spec = SamplingSpec(
        n=f.n, temperature=f.temperature, max_new_tokens=cfg.rollout.max_new_tokens,
        stop_token_ids=trainer.prompts.chat.stop_ids, seed=cfg.trainer.seed,
    )
    passed: list[list[bool]] = []
    rollout_samples, rollout_texts, rollout_correct = [], [], []
    for start in range(0, len(samples), CHUNK):
        chunk = trainer.collector.sample(samples[start : start + CHUNK], spec, first_index=start)
        owners, items = chunk.owners(), chunk.items
        # Correct and, where a consistency reward is named, consistent (a task without that term passes it).
        consistent = [r.terms.get(f.consistency_reward) if f.consistency_reward else None for r in items]
        ok = [r.correct and (c is None or c >= 1.0) for r, c in zip(items, consistent)]
        passed += [ok[i * f.n : (i + 1) * f.n] for i in range(len(chunk.samples))]
        rollout_samples += owners
        rollout_texts += [r.text for r in items]
        rollout_correct += [r.correct for r in items]
    kept = [samples[i] for i in FILTER_RULES.get(f.rule)(passed)]
    summary = {
        "prompts": len(samples), "kept": len(kept), "excluded": excluded,
        "pass_rate": sum(map(sum, passed)) / max(1, sum(map(len, passed))),
    }
    held_out = list(trainer.eval_samples)
    if f.english_references:
        references = build_english_references(rollout_samples, rollout_texts, rollout_correct)
        summary["english_references"] = len(references)
        summary["samples_with_reference"] = attach_english_references(kept + held_out, references, overwrite=True)
    if not kept:
        raise RuntimeError(
            f"filter: none of {len(samples)} prompts has 0 < correct-and-consistent < {f.n}; "
            "the next stage would have no data"
        )
    save_jsonl(kept, out_dir / "train.jsonl")
    save_jsonl(held_out, out_dir / "eval.jsonl")
    data = {"train": str(out_dir / "train.jsonl"), "eval": str(out_dir / "eval.jsonl")}
    return StageOutput(trainer.base_model_path, data, summary)
