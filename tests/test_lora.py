"""LoRA (actor.lora, peft): only the adapters train, engines and saved models get merged weights under the
base names, checkpoints hold the adapters and resume exactly, and export merges them."""

from pathlib import Path

import pytest
import torch

from trainer.batch import TrainBatch
from trainer.checkpoint import read_shards
from trainer.config import validate
from trainer.lora import merged_weights
from trainer.modeling import load_causal_lm
from trainer.recipe_config import compose_config
from trainer.workers.actor import ActorWorker

LORA = ["actor.lora.rank=4", "actor.lora.alpha=8", "actor.lr=1e-2"]
IDS = torch.tensor([[2, 3, 4, 5, 6, 7]])


def make_actor(model_dir, *overrides):
    cfg = compose_config(["recipe=quickstart", "actor.threads=1", *overrides])
    validate(cfg)
    return ActorWorker(model_dir, actor=cfg.actor, algorithm=cfg.algorithm, dtype="float32", seed=0, max_len=8)


def train_once(actor):
    batch = TrainBatch.from_sequences([[2, 3], [4, 5]], [[6, 7], [8]], pad_id=0)
    batch.advantages = torch.tensor([1.0, -0.5])
    return actor.update(batch, 1.0)


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_only_adapters_train_and_the_merged_weights_are_the_model(tiny_model_dir):
    base = {k: v.clone() for k, v in load_causal_lm(tiny_model_dir).state_dict().items()}
    actor = make_actor(tiny_model_dir, *LORA)
    trainable = [n for n, p in actor.model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # Every linear layer of the decoder gets an adapter by default: 7 per layer.
    layers = actor.model.config.num_hidden_layers
    assert len(trainable) == 2 * 7 * layers
    # B starts at zero: merged weights are the base model's, under its names.
    merged = dict(actor.full_weights())
    assert set(merged) == set(base) and all(torch.equal(merged[k], base[k]) for k in base)

    metrics = train_once(actor)
    assert metrics["optimizer_steps"] == 1.0
    state = dict(actor.model.named_parameters())
    for name, value in base.items():  # base weights bit-identical under the adapters
        key = name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        current = state[key] if key in state else state.get(name, state["model.embed_tokens.weight"])  # tied head
        assert torch.equal(current, value), name
    # The merged model (what a rollout engine loads) computes what the adapted actor computes.
    plain = load_causal_lm(tiny_model_dir)
    plain.load_state_dict(actor.weights())
    assert not torch.equal(plain.state_dict()["model.layers.0.self_attn.q_proj.weight"],
                           base["model.layers.0.self_attn.q_proj.weight"])
    torch.testing.assert_close(logits(plain), logits(actor.model), atol=1e-5, rtol=1e-5)


def test_checkpoint_holds_the_adapters_and_resumes_exactly(tiny_model_dir, tmp_path):
    actor = make_actor(tiny_model_dir, *LORA)
    train_once(actor)
    small = actor.save_checkpoint(str(tmp_path / "actor"))
    saved = read_shards(tmp_path / "actor")["model"]
    assert saved and all(".lora_" in k for k in saved)  # no base weights in the checkpoint
    assert small["lora"] == {"rank": 4, "alpha": 8.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                          "gate_proj", "up_proj", "down_proj"],
                             "dropout": 0.0}
    after_one = train_once(actor)  # the uninterrupted run's second update

    resumed = make_actor(tiny_model_dir, *LORA)
    resumed.load_checkpoint(str(tmp_path / "actor"), small)
    again = train_once(resumed)
    assert (again["policy_loss"], again["grad_norm"]) == (after_one["policy_loss"], after_one["grad_norm"])
    for (name, a), (_, b) in zip(actor.full_weights(), resumed.full_weights()):
        assert torch.equal(a, b), name  # adapters and optimiser moments restored: bit-identical

    full = make_actor(tiny_model_dir)
    with pytest.raises(ValueError, match="resume with the same actor.lora"):
        full.load_checkpoint(str(tmp_path / "actor"), small)


def test_saved_model_and_adapter_load_without_this_project(tiny_model_dir, tmp_path):
    import peft

    actor = make_actor(tiny_model_dir, *LORA)
    train_once(actor)
    actor.save_pretrained(str(tmp_path / "final"))
    want = logits(actor.model)
    merged = load_causal_lm(str(tmp_path / "final"))  # a plain Hugging Face folder, adapters merged
    torch.testing.assert_close(logits(merged), want, atol=1e-5, rtol=1e-5)
    adapted = peft.PeftModel.from_pretrained(load_causal_lm(tiny_model_dir), str(tmp_path / "final" / "lora_adapter"))
    torch.testing.assert_close(logits(adapted), want, atol=1e-5, rtol=1e-5)


def test_unknown_target_module_is_named(tiny_model_dir):
    with pytest.raises(ValueError, match=r"actor.lora.target_modules=\['no_such_proj'\]"):
        make_actor(tiny_model_dir, "actor.lora.rank=4", "actor.lora.target_modules=[no_such_proj]")


def test_merged_weights_follow_the_adapter_scale(tiny_model_dir):
    # W' = W + (alpha / rank) B A for each adapted layer, by hand on one layer.
    actor = make_actor(tiny_model_dir, *LORA)
    layer = actor.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        layer.lora_A["default"].weight.fill_(0.5)
        layer.lora_B["default"].weight.fill_(0.25)
    merged = dict(merged_weights(actor.model.state_dict().items(), actor.model))["model.layers.0.self_attn.q_proj.weight"]
    rank = 4
    expected = layer.base_layer.weight + (8 / rank) * 0.25 * 0.5 * rank  # each entry of B A sums rank products
    torch.testing.assert_close(merged, expected.detach())


@pytest.mark.slow
def test_a_lora_run_syncs_merged_weights_and_exports_its_checkpoint(tmp_path):
    from safetensors.torch import load_file

    from tests.test_loop_features import BASE
    from trainer.export_command import export_checkpoint
    from trainer.loop import train

    out = tmp_path / "run"
    train(compose_config([f"trainer.output_dir={out}", *BASE, *LORA, "trainer.total_steps=2", "trainer.save_every=2"]))
    final = load_causal_lm(str(out / "final_model"))
    exported = load_causal_lm(str(export_checkpoint(out / "checkpoints" / "step_00000002", tmp_path / "exported")))
    for (name, a), (_, b) in zip(final.state_dict().items(), exported.state_dict().items()):
        assert torch.equal(a, b), name
    # Step 2 was generated by the engine after the sync of step 1's merged weights: the engine's log-probs are
    # the adapted actor's (with the base weights they would differ by the update of lr 1e-2).
    import json

    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    mismatch = [row["logp_mismatch"] for row in steps if "logp_mismatch" in row]
    assert len(mismatch) == 2 and mismatch[1] < 1e-4
    adapters = load_file(str(out / "final_model" / "lora_adapter" / "adapter_model.safetensors"))
    assert adapters and all(".lora_" in k for k in adapters)


@pytest.mark.slow
@pytest.mark.parametrize("strategy, extra", [("fsdp2", []), ("deepspeed", ["actor.zero_stage=3"])])
def test_lora_on_two_sharded_ranks_matches_one_worker(tiny_model_dir, tmp_path, strategy, extra):
    """FSDP2 and ZeRO-3 shard the frozen base and the adapters alike; the merged weights are built from the
    gathered tensors, one layer at a time, and equal one worker's; the checkpoint holds the adapters only."""
    import peft

    from trainer.checkpoint import load_checkpoint, save_checkpoint
    from trainer.config import RoleResources
    from trainer.export_command import export_checkpoint
    from trainer.workers.group import WorkerGroup, init_ray

    def batch():
        b = TrainBatch.from_sequences([[2, 3], [4, 5], [6], [7, 8, 9]], [[6, 7], [8], [3, 4, 5], [2]], pad_id=0)
        b.advantages = torch.tensor([1.0, -0.5, 0.25, -1.0])
        return b

    plain = make_actor(tiny_model_dir, *LORA)
    want = [plain.update(batch(), 1.0) for _ in range(2)]
    cfg = compose_config(["recipe=quickstart", "actor.threads=1", *LORA, f"actor.strategy={strategy}",
                          "resources.actor.count=2", *extra])
    validate(cfg)
    init_ray(None, None, 2)
    group = WorkerGroup("actor", ActorWorker, RoleResources(count=2, num_cpus=0.5), use_ray=True, ranked=True,
                        model_path=tiny_model_dir, actor=cfg.actor, algorithm=cfg.algorithm, dtype="float32", seed=0,
                        max_len=8)
    try:
        group.call("init_distributed", *group.call_one(0, "rendezvous_address"))
        got = [group.call("update", batch(), 1.0)[0] for _ in range(2)]
        for g, w in zip(got, want):
            for key in ("policy_loss", "grad_norm", "entropy"):
                assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-7), key
        merged = group.call("weights")[0]
        for name, value in plain.weights().items():
            torch.testing.assert_close(merged[name], value, atol=1e-5, rtol=1e-4)

        saved_step = save_checkpoint(tmp_path / "checkpoints", 2, {"policy": {"model": tiny_model_dir,
                                                                            "tokenizer": tiny_model_dir}},
                                     folders={"actor": lambda path: group.call("save_checkpoint", str(path))[0]})
        small = load_checkpoint(saved_step)["actor"]
        if strategy == "fsdp2":
            saved = read_shards(saved_step / "actor")["model"]
            assert saved and all(".lora_" in k for k in saved)  # no base weights in the checkpoint
        # `python -m trainer export`: the adapters from the checkpoint merged onto the base model on disk.
        exported = load_causal_lm(str(export_checkpoint(saved_step, tmp_path / "exported"))).state_dict()
        for name, value in merged.items():
            torch.testing.assert_close(exported[name], value, atol=1e-6, rtol=1e-6)
        third = group.call("update", batch(), 1.0)[0]
        group.call("load_checkpoint", str(saved_step / "actor"), small)
        again = group.call("update", batch(), 1.0)[0]
        assert again["grad_norm"] == pytest.approx(third["grad_norm"], rel=1e-6)

        group.call("save_pretrained", str(tmp_path / "final"))
        want_logits = logits(load_causal_lm(str(tmp_path / "final")))
        adapted = peft.PeftModel.from_pretrained(load_causal_lm(tiny_model_dir), str(tmp_path / "final" / "lora_adapter"))
        torch.testing.assert_close(logits(adapted), want_logits, atol=1e-5, rtol=1e-5)
    finally:
        group.shutdown()
