"""The memory plan (trainer/memory_plan.py): parameter counts against transformers, hand-computed bytes per
strategy, fit verdicts whose suggestions really fit, and the plan inside `--check`. No downloads, no Ray."""

from __future__ import annotations

import json
import math

import pytest
import torch

from trainer.check import run_check
from trainer.memory_plan import (ACTIVATION_SCALE, BUNDLED_CONFIGS, GIB, VLLM_RUNTIME_GIB, activation_bytes,
                                 layer_activation_bytes, logit_bytes, model_shape, plan_lines, plan_memory)
from trainer.recipe_config import compose_config

# A Qwen2 small enough to count by hand: q/k/v carry a bias, o does not; embedding tied to the head.
TINY = {"model_type": "qwen2", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True,
        "max_position_embeddings": 4096}
# embedding 1000*64; per layer q 64*64+64, k and v 64*32+32 each, o 64*64, MLP 3*64*128, two norms 2*64;
# final norm 64.
TINY_LAYER = (64 * 64 + 64) + 2 * (64 * 32 + 32) + 64 * 64 + 3 * 64 * 128 + 2 * 64
TINY_PARAMS = 1000 * 64 + 2 * TINY_LAYER + 64
EIGHT_GPUS = ["actor.strategy=fsdp2", "resources.actor.count=4", "resources.actor.num_gpus=1",
              "actor.mixed_precision=true", "resources.rollout.count=3", "resources.rollout.num_gpus=1",
              "rollout.gpu_memory_utilization=0.85", "resources.reference.num_gpus=1"]


def bundled(name: str) -> dict:
    return json.loads((BUNDLED_CONFIGS / f"{name.replace('/', '__')}.json").read_text())


def meta_count(config) -> int:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def parts(plan, role: str) -> dict[str, float]:
    """Bytes of one role by kind (weights, gradients, optimiser, ...)."""
    found: dict[str, float] = {}
    for part in plan.role(role).parts:
        found[part.kind] = found.get(part.kind, 0.0) + part.nbytes
    return found


def config(*overrides: str):
    return compose_config(["model.dtype=float32", "data.max_prompt_tokens=100", "rollout.max_new_tokens=28",
                           "rollout.eval_max_new_tokens=28", *overrides])


# ----- parameter counts -----------------------------------------------------------------------------

def test_tiny_config_counted_by_hand_and_by_transformers():
    from transformers import Qwen2Config

    shape = model_shape(TINY)
    assert shape.params == TINY_PARAMS
    assert (shape.head_dim, shape.kv_heads, shape.tied) == (16, 2, True)
    assert meta_count(Qwen2Config(**TINY)) == TINY_PARAMS


@pytest.mark.parametrize("cls, fields", [
    ("Qwen2Config", dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)),  # Qwen2.5-0.5B
    ("LlamaConfig", dict(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=3,
                         num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=False,
                         attention_bias=True, mlp_bias=True)),
    ("Qwen3Config", dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=4,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True)),
], ids=["qwen2-tied", "llama-untied-biases", "qwen3-head_dim"])
def test_parameter_count_equals_transformers(cls, fields):
    import transformers

    hf_config = getattr(transformers, cls)(**fields)
    assert model_shape(hf_config.to_dict()).params == meta_count(hf_config)


@pytest.mark.parametrize("name", ["Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-32B", "Qwen/Qwen3-4B", "Qwen/Qwen3-8B",
                                  "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"])
def test_bundled_configs_count_as_transformers_builds_them(name):
    from transformers import AutoConfig

    fields = {k: v for k, v in bundled(name).items() if not k.startswith("_") and k not in ("architectures",
                                                                                           "torch_dtype")}
    hf_config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    assert model_shape(bundled(name)).params == meta_count(hf_config)


def test_vision_language_config_counts_text_exactly_and_vision_roughly():
    from transformers import AutoModelForImageTextToText, Qwen2VLConfig

    from trainer.memory_plan import tiny_config

    cfg = compose_config(["model.path=tiny_vl"])
    layout = tiny_config(cfg, vocab_size=300)
    shape = model_shape(layout)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(Qwen2VLConfig(**layout))
    vision = sum(p.numel() for name, p in model.named_parameters() if "visual" in name)
    total = sum(p.numel() for p in model.parameters())
    assert shape.params - shape.vision_params == total - vision  # the text part, exactly
    assert abs(shape.vision_params - vision) <= 0.05 * vision
    assert abs(shape.params - total) <= 0.005 * total


# ----- bytes by hand --------------------------------------------------------------------------------

def test_fsdp2_over_four_ranks_shards_weights_gradients_and_adam():
    cfg = config("actor.strategy=fsdp2", "resources.actor.count=4", "resources.actor.num_gpus=1")
    found = parts(plan_memory(cfg, model_shape(TINY)), "actor")
    p = TINY_PARAMS
    assert found["weights"] == p * 4 / 4  # float32, 1/4 each
    assert found["gradients"] == p * 4 / 4
    assert found["optimiser"] == 2 * p * 4 / 4  # AdamW m and v in the parameters' dtype
    # The root unit (embedding; head tied) and two layers gathered, plus one layer's unsharded gradients.
    assert found["gathered"] == (1000 * 64 + 3 * TINY_LAYER) * 4


def test_torch_strategy_in_bfloat16_keeps_everything_whole_in_bfloat16():
    cfg = config("model.dtype=bfloat16")
    found = parts(plan_memory(cfg, model_shape(TINY)), "actor")
    assert (found["weights"], found["gradients"], found["optimiser"]) == (2 * TINY_PARAMS, 2 * TINY_PARAMS,
                                                                          4 * TINY_PARAMS)


def test_lora_keeps_gradients_and_adam_for_the_adapters_only():
    # Rank 8 on every linear layer of TINY (head_dim 16: q/o 64 wide, k/v 32):
    # q 8*(64+64), k and v 8*(64+32) each, o 8*(64+64), gate and up 8*(64+128) each, down 8*(128+64), per layer.
    adapters = 2 * 8 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)
    cfg = config("actor.lora.rank=8")
    found = parts(plan_memory(cfg, model_shape(TINY)), "actor")
    assert (found["weights"], found["gradients"], found["optimiser"]) == (4 * (TINY_PARAMS + adapters),
                                                                          4 * adapters, 8 * adapters)
    # Sharded: the adapters' gradients and optimiser state are split over the ranks like the rest.
    sharded = parts(plan_memory(config("actor.lora.rank=8", "actor.strategy=fsdp2", "resources.actor.count=4",
                                       "resources.actor.num_gpus=1"), model_shape(TINY)), "actor")
    assert (sharded["weights"], sharded["gradients"], sharded["optimiser"]) == (
        4 * (TINY_PARAMS + adapters) / 4, 4 * adapters / 4, 8 * adapters / 4)
    zero3 = parts(plan_memory(config("actor.lora.rank=8", "actor.strategy=deepspeed", "actor.zero_stage=3",
                                     "resources.actor.count=4", "resources.actor.num_gpus=1"), model_shape(TINY)), "actor")
    assert zero3["optimiser"] == 16 * adapters / 4
    # peft counts the same adapters on the same architecture.
    from types import SimpleNamespace

    from transformers import AutoConfig, AutoModelForCausalLM

    from trainer.lora import add_lora

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY))
    add_lora(model, SimpleNamespace(rank=8, alpha=16, dropout=0.0, target_modules=list(cfg.actor.lora.target_modules)))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == adapters


@pytest.mark.parametrize("stage, weights, gradients", [(1, 4, 4), (2, 4, 1), (3, 1, 1)])
def test_deepspeed_zero_stages_shard_optimiser_then_gradients_then_weights(stage, weights, gradients):
    cfg = config("actor.strategy=deepspeed", f"actor.zero_stage={stage}", "resources.actor.count=4",
                 "resources.actor.num_gpus=1")
    found = parts(plan_memory(cfg, model_shape(TINY)), "actor")
    p = TINY_PARAMS
    assert found["weights"] == p * 4 * weights / 4
    assert found["gradients"] == p * 4 * gradients / 4
    assert found["optimiser"] == 16 * p / 4  # float32 master, m, v and gradients of the partition


def test_cpu_offload_moves_fsdp2_state_to_the_host():
    cfg = config("actor.strategy=fsdp2", "resources.actor.count=4", "resources.actor.num_gpus=1",
                 "actor.cpu_offload=true")
    actor = plan_memory(cfg, model_shape(TINY)).role("actor")
    assert actor.host_bytes == 4 * TINY_PARAMS * 4 / 4  # weights + gradients + m + v, one shard
    assert actor.bytes_of("weights", "gradients", "optimiser") == 0


def test_activations_and_logits_by_hand():
    shape = model_shape(TINY)
    # float32, per token per layer: two norms 2*(4+8)*64, attention (3*64 + 2*32)*4, MLP 4*128*4.
    per_layer = 2 * 12 * 64 + (3 * 64 + 2 * 32) * 4 + 4 * 128 * 4
    assert layer_activation_bytes(shape, 4) == per_layer
    final_norm = 12 * 64
    assert activation_bytes(shape, 100, 4, False) == ACTIVATION_SCALE * 100 * (2 * per_layer + final_norm + per_layer)
    assert activation_bytes(shape, 100, 4, True) == ACTIVATION_SCALE * 100 * (2 * 64 * 4 + per_layer + final_norm
                                                                              + per_layer)
    head_grad = 1000 * 64 * 4
    # Chunked: 16 rows of 4 float32 [rows, vocab] copies. Plain: all 100 positions' logits, then per response
    # position the scaled copy, the softmax and one gradient.
    assert logit_bytes(shape, 100, 40, 16, 4) == 16 * 1000 * 16 + head_grad
    assert logit_bytes(shape, 100, 40, 0, 4) == 100 * 1000 * 4 + 40 * 1000 * 12 + head_grad


def test_actor_micro_batch_is_micro_batch_size_rows_of_prompt_plus_response():
    cfg = config("actor.micro_batch_size=8", "actor.mini_batch_size=256", "actor.gradient_checkpointing=true")
    shape = model_shape(TINY)
    found = parts(plan_memory(cfg, shape), "actor")
    assert found["activations"] == activation_bytes(shape, 8 * 128, 4, True)  # 8 rows of 100 + 28 tokens
    cfg = config("actor.max_tokens_per_micro_batch=300")  # two 128-token rows fit the budget
    assert parts(plan_memory(cfg, shape), "actor")["activations"] == activation_bytes(shape, 256, 4, False)


def test_vllm_kv_cache_is_the_budget_left_after_weights_and_runtime():
    shape = model_shape(bundled("Qwen/Qwen2.5-7B-Instruct"))
    cfg = compose_config(["recipe=m2_reasoning", *EIGHT_GPUS, "rollout.gpu_memory_utilization=0.5",
                          "data.max_prompt_tokens=1024"])
    rollout = plan_memory(cfg, shape).role("rollout")
    kv = 0.5 * 80 * GIB - shape.params * 2 - VLLM_RUNTIME_GIB * GIB
    assert parts_of(rollout)["kv_cache"] == pytest.approx(kv)
    per_token = 2 * 28 * 4 * 128 * 2  # keys and values, 28 layers, 4 KV heads of 128, bfloat16
    assert f"KV cache: {int(kv // per_token):,} tokens" in rollout.notes[0]


def parts_of(role) -> dict[str, float]:
    return {part.kind: part.nbytes for part in role.parts}


# ----- verdicts ---------------------------------------------------------------------------------------

def test_32b_does_not_fit_one_gpu_with_torch_and_fits_eight_fsdp2_ranks_with_checkpointing():
    shape = model_shape(bundled("Qwen/Qwen2.5-32B"))
    base = ["recipe=baichuan_m2", "data.max_prompt_tokens=1024", "rollout.max_new_tokens=4096",
            "rollout.eval_max_new_tokens=4096", "actor.micro_batch_size=1", "resources.actor.num_gpus=1"]
    alone = plan_memory(compose_config(base), shape)
    verdict = next(line for line in alone.verdicts if line.startswith("actor:"))
    assert not alone.fits and verdict.startswith("actor: does NOT fit: ") and "actor.strategy=fsdp2" in verdict
    # bf16 weights, gradients and AdamW: 8 bytes a parameter, 244 GiB on one GPU.
    assert alone.role("actor").bytes_of("weights", "gradients", "optimiser") == 8 * shape.params
    sharded = plan_memory(compose_config(base + ["actor.strategy=fsdp2", "resources.actor.count=8",
                                                 "actor.gradient_checkpointing=true"]), shape)
    assert any(line.startswith("actor: fits: ") for line in sharded.verdicts), sharded.verdicts
    assert sharded.role("actor").device_bytes < 0.9 * 80 * GIB


def test_32b_rollout_on_one_gpu_cannot_hold_a_long_sequence_and_tensor_parallel_two_can():
    shape = model_shape(bundled("Qwen/Qwen2.5-32B"))
    base = ["recipe=baichuan_m2", *EIGHT_GPUS, "data.max_prompt_tokens=1024", "rollout.max_new_tokens=32768",
            "rollout.eval_max_new_tokens=32768"]
    plan = plan_memory(compose_config(base), shape)
    verdict = next(line for line in plan.verdicts if line.startswith("rollout:"))
    assert "does NOT fit" in verdict and "vLLM refuses to start" in verdict
    assert "rollout.tensor_parallel_size=2 resources.rollout.num_gpus=2" in verdict
    split = plan_memory(compose_config(base + ["rollout.tensor_parallel_size=2", "resources.rollout.num_gpus=2"]),
                        shape)
    assert not split.role("rollout").cannot_start
    assert parts_of(split.role("rollout"))["weights"] == shape.params * 2 / 2


@pytest.mark.parametrize("recipe, model", [("m2_reasoning", "Qwen/Qwen2.5-7B-Instruct"),
                                           ("baichuan_m2", "Qwen/Qwen2.5-32B"), ("r4b", "Qwen/Qwen3-4B")])
def test_every_suggestion_for_the_actor_makes_it_fit(recipe, model):
    shape = model_shape(bundled(model))
    overrides = [f"recipe={recipe}", *EIGHT_GPUS]
    plan = plan_memory(compose_config(overrides), shape)
    verdict = next(line for line in plan.verdicts if line.startswith("actor:"))
    assert "does NOT fit" in verdict and "; try " in verdict
    options = verdict.split("; try ")[1].removeprefix("all of: ").split(" or ")
    for option in options:
        fixed = plan_memory(compose_config(overrides + option.split()), shape)
        assert fixed.role("actor").device_bytes <= 0.9 * 80 * GIB, (option, fixed.verdicts)


def test_colocated_plan_sums_the_roles_on_one_gpu_with_the_rollout_asleep_while_training():
    shape = model_shape(bundled("Qwen/Qwen2.5-7B-Instruct"))
    cfg = compose_config(["recipe=m2_reasoning", "algorithm.kl_coef=0", "resources.placement=colocate",
                          "actor.strategy=fsdp2", "resources.actor.count=8", "resources.actor.num_gpus=0.5",
                          "resources.rollout.count=8", "resources.rollout.num_gpus=0.5",
                          "rollout.gpu_memory_utilization=0.4", "actor.gradient_checkpointing=true"])
    plan = plan_memory(cfg, shape)
    actor, rollout = plan.role("actor"), plan.role("rollout")
    (generation, at_rest), (training, peak) = plan.colocated
    assert generation.startswith("generation") and training.startswith("training")
    assert at_rest == actor.bytes_of("weights", "optimiser") + rollout.device_bytes
    assert rollout.device_bytes == pytest.approx(0.4 * 80 * GIB)
    assert peak == actor.device_bytes + 1 * GIB  # vLLM asleep keeps about 1 GiB
    assert plan.fits and sum(line.startswith("shared GPU") for line in plan.verdicts) == 2


def test_cpu_workers_are_planned_as_host_memory():
    plan = plan_memory(config(), model_shape(TINY))
    assert plan.header[0] == "memory plan (CPU workers: host memory per worker, GiB):"
    assert plan.verdicts[0].startswith("actor: ") and "host memory per worker (no GPU declared)" in plan.verdicts[0]
    assert plan.verdicts[-1].startswith("all workers together: ")


def test_the_longest_prompt_read_sizes_the_rows_unless_max_prompt_tokens_is_set():
    cfg = compose_config(["model.dtype=float32", "rollout.max_new_tokens=28", "rollout.eval_max_new_tokens=28"])
    plan = plan_memory(cfg, model_shape(TINY), measured=(50, 700))
    assert "rows of 50 prompt (the longest of 700 prompts read" in plan.header[2]
    plan = plan_memory(cfg, model_shape(TINY))  # nothing measured: an assumed prompt within the context
    assert "rows of 1024 prompt (assumed" in plan.header[2]
    assert "rows of 100 prompt (data.max_prompt_tokens)" in plan_memory(config(), model_shape(TINY)).header[2]


def test_without_a_config_json_the_plan_is_one_line(tmp_path):
    lines = plan_lines(compose_config([f"model.path={tmp_path}"]), str(tmp_path))
    assert lines == [f"memory plan: not computed, it needs the model's config.json ({tmp_path} not found here)"]


# ----- inside --check ---------------------------------------------------------------------------------

def test_check_prints_the_plan_for_the_default_recipe_and_stays_ok():
    lines: list[str] = []
    code = run_check(compose_config(["recipe=quickstart"]), echo=lines.append)
    assert code == 0 and lines[-1] == "[check] ok"
    header = lines.index("[check] memory plan (CPU workers: host memory per worker, GiB):")
    assert lines[header + 1].startswith("[check]   tiny: ") and "parameters" in lines[header + 1]
    assert any(line.startswith("[check]   actor 1 x CPU, torch") for line in lines[header:])


def test_check_of_an_offline_full_recipe_uses_the_bundled_config_and_adds_no_problem():
    lines: list[str] = []
    run_check(compose_config(["recipe=r4b", "model.offline=true", *EIGHT_GPUS]), echo=lines.append)
    assert "[check] memory plan: config from the bundled copy of Qwen/Qwen3-4B's config.json" in lines
    assert any(line.startswith("[check] memory plan, stage bpo (GiB per GPU, 80.0 GiB GPUs") for line in lines)
    assert not any("memory plan" in line for line in lines if line.startswith("[check] problem:"))
    assert math.isclose(model_shape(bundled("Qwen/Qwen3-4B")).params / 1e9, 4.02, abs_tol=0.005)
