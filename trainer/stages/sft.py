"""Cold-start SFT: teach the answer format on `metadata.sft_target` before RL (M2-Reasoning, R-4B, Ovis2.5)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from data.curriculum import curriculum_stages
from trainer.stages import STAGES, StageOutput


def run_sft(trainer) -> str:
    """Run SFT once and save its model in `<run_dir>/sft_model`, which later runs reuse; returns the model
    the next stage starts from (the base model when `sft.steps` is 0)."""
    cfg, prompts = trainer.cfg.sft, trainer.prompts
    out_dir = trainer.run_dir / "sft_model"
    if cfg.steps <= 0:
        return trainer.base_model_path
    if (out_dir / "stage_done.json").exists():
        trainer.tracker.print(f"[sft] reusing {out_dir}")
        return str(out_dir)
    actor = trainer.workers.start_actor(trainer.base_model_path)
    usable = [s for s in trainer.train_samples if "sft_target" in s.metadata]
    if not usable:
        raise ValueError("sft.steps > 0 but no training sample has metadata.sft_target")
    eos = prompts.tokenizer.eos_token_id
    targets = [prompts.text_ids(prompts.chat.sft_target(s, s.metadata["sft_target"])) + [eos] for s in usable]
    stages = curriculum_stages(usable, cfg.curriculum_key) if cfg.curriculum_key else None
    start = time.time()
    curve = actor.call(
        "sft", [prompts.ids(s) for s in usable], targets, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
        weight_decay=cfg.weight_decay, pad_id=trainer.pad_id, media=prompts.media_of(usable), stages=stages,
        stage_steps=cfg.stage_steps, loss_agg=cfg.loss_agg,
    )[0]
    trainer.tracker.print(f"[sft] {cfg.steps} steps in {time.time() - start:.0f}s, loss {curve[0][1]:.3f} -> {curve[-1][1]:.3f}")
    trainer.save_model(out_dir)
    (out_dir / "stage_done.json").write_text(json.dumps({"steps": cfg.steps, "loss_curve": curve}))
    # RL starts a fresh actor from the saved model (fresh optimiser and schedule), the same
    # whether SFT ran just now or is reused from an earlier run.
    trainer.workers.stop_actor()
    return str(out_dir)


@STAGES.register("sft")
def sft_stage(trainer, stage_dir: Path, used_ids: set[str]) -> StageOutput:
    """Cold-start SFT as a stage of its own; its model is the next stage's start."""
    model = run_sft(trainer)
    return StageOutput(model, None, {"steps": trainer.cfg.sft.steps, **json.loads((Path(model) / "stage_done.json").read_text())})
