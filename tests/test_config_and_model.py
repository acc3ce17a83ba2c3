"""Config composition errors, validation, the tiny model and tokenizer, and offline model errors."""

import os
import subprocess
import sys

import pytest

from trainer.recipe_config import ConfigError, available_recipes, compose_config
from trainer.config import validate


def test_default_recipe_is_quickstart():
    cfg = compose_config([])
    assert cfg.recipe_name == "quickstart"
    assert cfg.trainer.output_dir == "outputs/quickstart"
    assert cfg.sft.steps > 0 and cfg.rollout.engine == "auto"


def test_overrides_are_typed():
    cfg = compose_config(["actor.lr=1e-5", "rollout.n=4", "engine.ray=false"])
    assert cfg.actor.lr == 1e-5 and cfg.rollout.n == 4 and cfg.engine.ray is False


def test_unknown_key_lists_the_keys_that_exist():
    with pytest.raises(ConfigError) as error:
        compose_config(["actor.lrr=1"])
    message = str(error.value)
    assert "'lrr' is not under actor" in message
    assert "mini_batch_size" in message and "Did you mean: lr" in message


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="not under the top level. Keys there: recipe_name, model"):
        compose_config(["optimizer.lr=1"])


def test_unknown_recipe_lists_recipes():
    with pytest.raises(ConfigError) as error:
        compose_config(["recipe=nope"])
    assert "unknown recipe 'nope'" in str(error.value)
    for name in available_recipes():
        assert name in str(error.value)


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match="actor.lr"):
        compose_config(["actor.lr=fast"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("actor.mini_batch_size=100", "actor.mini_batch_size=100 must divide the rollout batch"),
        ("actor.micro_batch_size=100", "actor.micro_batch_size=100 must divide actor.mini_batch_size=256"),
        ("rollout.engine=sglang", "rollout.engine: unknown rollout engine 'sglang'; registered: hf, vllm"),
        ("actor.strategy=zero9", "actor.strategy: unknown training strategy 'zero9'; registered: deepspeed, fsdp2, torch"),
        ("data.sampler=random", "data.sampler: unknown prompt sampler 'random'"),
        ("resources.actor.count=2", "data parallel needs actor.strategy=fsdp2 or deepspeed"),
    ],
)
def test_validation_names_the_key(override, fragment):
    with pytest.raises(ValueError) as error:
        validate(compose_config([override]))
    assert fragment in str(error.value)


def test_cli_reports_errors_without_traceback():
    result = subprocess.run([sys.executable, "-m", "trainer", "actor.lrr=1"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown config key 'actor.lrr'")
    assert "Traceback" not in result.stderr


def test_missing_model_names_the_tiny_preset(tmp_path):
    # Offline with an empty cache: an error that says so, whatever the network (tests/test_hub.py: online).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "model.path=nobody/no-such-model", f"trainer.output_dir={tmp_path}",
         "tracking.wandb.mode=disabled"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 2
    assert "model.path='nobody/no-such-model' was not found" in result.stderr
    assert f"Hugging Face cache {tmp_path / 'hf' / 'hub'}: not there" in result.stderr
    assert "skipped: offline (HF_HUB_OFFLINE=1 in the environment)" in result.stderr
    assert "model.path=tiny" in result.stderr and "Traceback" not in result.stderr


def test_tiny_tokenizer_ids_survive_autotokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    from trainer.tiny_model import build_tokenizer

    text = "47+385<think>7+5=12,4+8+1=13,3+1=4</think><answer>\\boxed{432}</answer><|endoftext|>"
    loaded = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = loaded(text, add_special_tokens=False)["input_ids"]
    assert ids == build_tokenizer()(text, add_special_tokens=False)["input_ids"]
    # One token per character (prompt 6, thinking 21, answer 3) and per marker (7).
    assert len(ids) == 6 + 21 + 3 + 7
    assert loaded.decode(ids) == text


def test_tiny_model_is_cached(tmp_path):
    from trainer.config import TinyModelConfig
    from trainer.tiny_model import build_tiny_model

    out = build_tiny_model(TinyModelConfig(), tmp_path / "m", seed=3)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    build_tiny_model(TinyModelConfig(), tmp_path / "m", seed=3)
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="head_dim must be >= 32"):
        build_tiny_model(TinyModelConfig(hidden_size=64, num_attention_heads=4), tmp_path / "bad", seed=0)
