"""Data-filter stage: roll out n samples per prompt, keep prompts by a rule (M-Thinker's rejection sampling),
optionally attach English reference reasoning for the cross-lingual alignment reward."""

from __future__ import annotations

from pathlib import Path

from data.sources import save_jsonl
from rewards.cross_lingual import attach_english_references, build_english_references
from trainer.algorithms.filters import mthinker_rejection_filter
from trainer.engines.sampling import SamplingSpec

CHUNK = 64


def run_filter(trainer, out_dir: Path, exclude_ids: set[str] = frozenset()) -> dict:
    """Keep prompts by `filter.rule`, skipping those an earlier filter stage already kept (`exclude_ids`)."""
    cfg, f = trainer.cfg, trainer.cfg.filter
    if f.rule != "mthinker":
        raise ValueError(f"filter.rule={f.rule!r}: available: mthinker")
    trainer.start_workers(trainer.base_model_path)
    samples = [s for s in trainer.train_samples if s.id is None or s.id not in exclude_ids]
    excluded = len(trainer.train_samples) - len(samples)
    samples = samples[: f.max_prompts] if f.max_prompts else samples
    spec = SamplingSpec(
        n=f.n, temperature=f.temperature, max_new_tokens=cfg.rollout.max_new_tokens,
        stop_token_ids=trainer.chat.stop_ids, seed=cfg.trainer.seed,
    )
    passed: list[list[bool]] = []
    rollout_samples, rollout_texts, rollout_correct = [], [], []
    for start in range(0, len(samples), CHUNK):
        chunk = samples[start : start + CHUNK]
        completions = trainer.generate_ids([trainer.encode_prompt(s) for s in chunk], spec, first_index=start,
                                              media=trainer.media_of(chunk))
        owners = [chunk[c.prompt_index - start] for c in completions]
        texts = [trainer.response_text(s, c) for s, c in zip(owners, completions)]
        scored, correct = trainer.score(texts, owners)
        consistent = scored.components.get(f.consistency_reward) if f.consistency_reward else None
        ok = [c and (consistent is None or consistent[i] is None or consistent[i] >= 1.0) for i, c in enumerate(correct)]
        passed += [ok[i * f.n : (i + 1) * f.n] for i in range(len(chunk))]
        rollout_samples += owners
        rollout_texts += texts
        rollout_correct += correct
    kept = [samples[i] for i in mthinker_rejection_filter(passed)]
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
    return summary
