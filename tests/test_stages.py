"""Stage chaining: sft -> filter -> dpo -> grpo, each from the previous stage's output, resumable per stage."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from trainer.recipe_config import compose_config
from trainer.stages.runner import StageConfigError, run_stages

pytestmark = pytest.mark.slow

COMMON = [
    "engine.ray=false", "rollout.engine=hf", "data.train=synthetic:multilingual_arithmetic", "data.num_train=24",
    "data.num_eval=4", "data.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=40",
    "rollout.eval_max_new_tokens=40", "actor.mini_batch_size=16", "actor.micro_batch_size=16",
    "reward.num_workers=0", "tracking.wandb.mode=disabled", "tracking.console=false",
    "reward.tasks={default: [{name: format}, {name: boxed_answer}]}",
]
STAGES = (
    "stages={"
    "warmup: {type: sft, config: {sft: {steps: 40, batch_size: 16}}}, "
    "select: {type: filter, config: {filter: {n: 4, temperature: 1.0, consistency_reward: null, "
    "english_references: true}}}, "
    "prefer: {type: dpo, config: {dpo: {num_queries: 8, samples_per_query: 4, steps: 3, batch_size: 4}, "
    "actor: {lr: 1.0e-4}}}, "
    "rl: {type: grpo, config: {trainer: {total_steps: 2, save_every: 0}, actor: {lr: 1.0e-4}}}}"
)


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(f"{folder}/model.safetensors")


def test_stages_chain_and_resume(tmp_path):
    cfg = compose_config([f"trainer.output_dir={tmp_path}", *COMMON, STAGES])
    results = run_stages(cfg)
    assert [r["name"] for r in results] == ["warmup", "select", "prefer", "rl"]
    warmup, select, prefer, rl = results
    # Each stage starts from the one before: the filter keeps the SFT model, the others write new ones.
    assert warmup["model"].endswith("00-warmup/sft_model")
    assert select["model"] == warmup["model"]
    assert prefer["model"].endswith("02-prefer/final_model") and rl["model"].endswith("03-rl/final_model")
    assert not torch.equal(weights(warmup["model"])["model.embed_tokens.weight"],
                           weights(prefer["model"])["model.embed_tokens.weight"])
    # The filter kept only prompts with 0 < correct < n, wrote them, and later stages trained on that file.
    kept = (tmp_path / "stages" / "01-select" / "train.jsonl").read_text().splitlines()
    assert len(kept) == select["summary"]["kept"] >= 1
    assert prefer["data"]["train"].endswith("01-select/train.jsonl")
    assert rl["summary"]["steps"] == 2 and "eval_after" in rl["summary"]
    assert prefer["summary"]["pairs"] >= 1

    # A second run finds every stage done and changes nothing.
    stamp = (tmp_path / "stages" / "03-rl" / "final_model" / "model.safetensors").stat().st_mtime_ns
    again = run_stages(compose_config([f"trainer.output_dir={tmp_path}", *COMMON, STAGES]))
    assert [r["model"] for r in again] == [r["model"] for r in results]
    assert (tmp_path / "stages" / "03-rl" / "final_model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "stages.json").read_text())[3]["summary"]["steps"] == 2


def test_bad_stage_config_names_the_stage(tmp_path):
    cfg = compose_config([f"trainer.output_dir={tmp_path}", *COMMON,
                          "stages={rl: {type: grpo, config: {actor: {lrr: 1}}}}"])
    with pytest.raises(StageConfigError, match=r"stages\.rl\.config: .*lrr"):
        run_stages(cfg)
    cfg = compose_config([f"trainer.output_dir={tmp_path}", *COMMON, "stages={rl: {type: ppo}}"])
    with pytest.raises(StageConfigError, match="stages.rl.type must be one of .*dpo, filter, grpo, sft"):
        run_stages(cfg)


# --- docs/architecture.md: a new stage type is one function plus one name; its snippet runs as written --
def registered_doc_stage() -> None:
    import re
    from pathlib import Path

    from trainer.stages import STAGES

    if "count_tasks" not in STAGES:
        doc = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
        [block] = [b for b in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S) if "count_tasks" in b]
        exec(compile(block, f"{doc}, the stage example", "exec"), {})


def test_a_registered_stage_type_runs_in_a_recipe(tmp_path):
    registered_doc_stage()
    cfg = compose_config([f"trainer.output_dir={tmp_path}", *COMMON, "data.train=synthetic:math_and_choice",
                          "data.num_train=30", "stages={census: {type: count_tasks}}"])
    [result] = run_stages(cfg)
    # synthetic:math_and_choice splits its training prompts half and half between the two tasks.
    assert result["type"] == "count_tasks" and result["summary"]["tasks"] == {"math": 15, "multiple_choice": 15}
    assert result["model"].endswith("tiny_model")
