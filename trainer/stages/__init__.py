"""Training stages and the runner that chains a recipe's stages.

A stage type is one function registered by name in `STAGES`:
`fn(trainer, stage_dir: Path, used_ids: set[str]) -> StageOutput`; `used_ids` are the prompts earlier
filter stages kept. The runner builds the stage's `Trainer` from its composed config and closes it after.
"""

from __future__ import annotations

from dataclasses import dataclass

from plugins.registry import Registry

STAGES = Registry("stage type", args=3)


@dataclass
class StageOutput:
    model: str
    "The model folder the next stage starts from."
    data: dict | None
    "{train, eval} JSONL files the next stages train on (a filter's output); None keeps the current data."
    summary: dict
