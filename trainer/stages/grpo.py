"""The RL stage: GRPO (or any registered advantage/loss) with the single controller's loop."""

from __future__ import annotations

from pathlib import Path

from trainer.stages import STAGES, StageOutput


@STAGES.register("grpo")
def grpo_stage(trainer, stage_dir: Path, used_ids: set[str]) -> StageOutput:
    """Cold-start SFT when `sft.steps` > 0, then `trainer.total_steps` RL steps (trainer.loop.Trainer.fit)."""
    summary = trainer.fit()
    return StageOutput(str(stage_dir / "final_model"), None, summary)
