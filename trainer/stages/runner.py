"""Run a recipe's stages in order, each starting from the previous stage's model (and data, after a filter).

A recipe lists `stages: {name: {type, config}}`. Stage k runs in `<output_dir>/stages/<k>-<name>/` with the
top-level config merged with its own `config`. A finished stage writes `stage.json` (its output model, data
and summary); a rerun skips finished stages and resumes the unfinished one from its checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from omegaconf import OmegaConf

from trainer.config import Config, validate
from trainer.console import say
from trainer.recipe_config import omegaconf_line
from trainer.stages import STAGES, StageOutput
from trainer.stages import dpo, filter, grpo, sft  # noqa: F401  (register the built-in stage types)



class StageConfigError(ValueError):
    pass


def stage_config(cfg: Config, name: str, spec: dict, stage_dir: Path, model: str, data: dict | None) -> Config:
    """The top-level config with the stage's own `config` merged on top, pointed at its inputs and folder."""
    base = OmegaConf.create(asdict(cfg))
    base.stages = {}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), base, spec.get("config") or {})
    except Exception as error:  # omegaconf names the offending key
        raise StageConfigError(f"stages.{name}.config: {omegaconf_line(error)}") from None
    merged.trainer.output_dir = str(stage_dir)
    merged.model.path = model
    if data:
        merged.data.train, merged.data.eval, merged.data.preprocess = data["train"], data["eval"], None
    if spec["type"] != "sft":
        merged.sft.steps = 0  # cold-start SFT is a stage of its own in staged recipes
    stage = OmegaConf.to_object(merged)
    try:
        validate(stage)
    except ValueError as error:
        raise StageConfigError(f"stages.{name}: {error}") from None
    return stage


def _run_one(kind: str, cfg: Config, stage_dir: Path, used_ids: set[str]) -> StageOutput:
    from trainer.loop import Trainer

    if kind == "sft" and cfg.sft.steps <= 0:
        # Skipped (e.g. starting from an SFT checkpoint): checked before loading the stage's data.
        return StageOutput(cfg.model.path, None, {"steps": 0, "skipped": True})
    trainer = Trainer(cfg)
    try:
        return STAGES.get(kind)(trainer, stage_dir, used_ids)
    finally:
        trainer.close()


def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def describe(name: str, kind: str, summary: dict) -> str:
    """One line on what a stage did: steps, reward, accuracy."""
    parts = []
    if kind in ("grpo", "sft", "dpo") and "steps" in summary:
        parts.append(f"{summary['steps']} steps")
    if kind == "sft" and summary.get("loss_curve"):
        parts.append(f"loss {summary['loss_curve'][0][1]:.3f} -> {summary['loss_curve'][-1][1]:.3f}")
    if "reward_last10" in summary:
        parts.append(f"reward {summary['reward_last10']:.3f} (last 10 steps)")
    if "pairs" in summary:
        parts.append(f"{summary['pairs']} pairs, loss {summary['loss_last10']:.3f}")
    if "eval_before" in summary and "eval_after" in summary:
        before, after = summary["eval_before"]["eval/acc"], summary["eval_after"]["eval/acc"]
        parts.append(f"held-out accuracy {100 * before:.1f}% -> {100 * after:.1f}%")
    if kind == "filter":
        parts.append(f"kept {summary['kept']}/{summary['prompts']} prompts (pass rate {summary['pass_rate']:.2f})")
        if "english_references" in summary:
            parts.append(f"{summary['english_references']} English references")
    return f"[stage {name} ({kind})] " + ", ".join(parts)


def run_stages(cfg: Config) -> list[dict]:
    run_dir = Path(cfg.trainer.output_dir)
    # Every stage's type and config are checked before the first one runs, so a typo in the last stage
    # does not wait for the others to train.
    for index, (name, spec) in enumerate(cfg.stages.items()):
        if not isinstance(spec, dict) or spec.get("type") not in STAGES:
            raise StageConfigError(f"stages.{name}.type must be one of {', '.join(STAGES.names())}")
        stage_config(cfg, name, spec, run_dir / "stages" / f"{index:02d}-{name}", cfg.model.path, None)
    model = cfg.model.path
    if model == "tiny":
        from trainer.tiny_model import build_tiny_model

        model = str(build_tiny_model(cfg.model.tiny, run_dir / "tiny_model", seed=cfg.trainer.seed))
    data = None
    used_ids: set[str] = set()  # prompts earlier filters kept: a later filter draws from the rest (M-Thinker Iter2)
    results = []
    for index, (name, spec) in enumerate(cfg.stages.items()):
        stage_dir = run_dir / "stages" / f"{index:02d}-{name}"
        record_path = stage_dir / "stage.json"
        if record_path.exists():
            record = json.loads(record_path.read_text())
            say(describe(name, spec["type"], record["summary"]) + " (done earlier)")
        else:
            # A filter reads the recipe's own data (not an earlier filter's output), minus prompts already used.
            stage_cfg = stage_config(cfg, name, spec, stage_dir, model, None if spec["type"] == "filter" else data)
            say(f"[stage {name} ({spec['type']})] starting in {stage_dir}")
            out = _run_one(spec["type"], stage_cfg, stage_dir, used_ids)
            record = {"type": spec["type"], "model": out.model, "data": out.data or data, "summary": out.summary}
            record_path.write_text(json.dumps(record, indent=2))
            say(describe(name, spec["type"], out.summary))
        model, data = record["model"], record["data"]
        if spec["type"] == "filter":
            used_ids |= {row["id"] for row in _read_rows(Path(record["data"]["train"]))}
        results.append({"name": name, **record})
    (run_dir / "stages.json").write_text(json.dumps(results, indent=2))
    return results
