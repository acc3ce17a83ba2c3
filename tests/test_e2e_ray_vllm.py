"""End to end: GRPO steps through Ray actors with the vLLM engine; weights move and sync exactly."""

import pytest
import torch

from trainer.recipe_config import compose_config
from trainer.rollout.sampling import SamplingSpec
from trainer.loop import Trainer
from trainer.workers.group import WorkerDiedError

pytestmark = pytest.mark.slow


def vllm_view(actor_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Actor (HF) weights under vLLM's names: q/k/v and gate/up are fused into one matrix each."""
    out = {}
    for name, tensor in actor_weights.items():
        if name == "lm_head.weight":
            continue  # tied to embed_tokens
        for fused, parts in (("qkv_proj", ("q_proj", "k_proj", "v_proj")), ("gate_up_proj", ("gate_proj", "up_proj"))):
            if f".{parts[0]}." in name:
                out[name.replace(parts[0], fused)] = torch.cat(
                    [actor_weights[name.replace(parts[0], p)] for p in parts]
                )
        if not any(f".{p}." in name for p in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")):
            out[name] = tensor
    return out


def assert_same(engine_weights: dict[str, torch.Tensor], actor_weights: dict[str, torch.Tensor], when: str):
    for name, tensor in vllm_view(actor_weights).items():
        engine_tensor = engine_weights[name]
        # vLLM pads the vocabulary dimension of the embedding; compare the real rows.
        assert torch.equal(engine_tensor[: tensor.shape[0]], tensor), f"{when}: rollout {name} differs from the actor"


def test_grpo_steps_on_ray_with_vllm(tmp_path):
    cfg = compose_config([
        "recipe=quickstart", f"trainer.output_dir={tmp_path}", "trainer.total_steps=2", "trainer.save_every=0",
        "sft.steps=0", "data.num_train=64", "data.num_eval=8", "data.prompts_per_step=8", "rollout.n=4",
        "actor.mini_batch_size=16", "actor.micro_batch_size=16", "actor.lr=1e-3", "rollout.max_new_tokens=16",
        "rollout.eval_max_new_tokens=16", "tracking.wandb.mode=offline", "tracking.console=false",
        "engine.ray=true", "rollout.engine=vllm",
        # Reward by length: the random-init model's groups always vary, so every step has a gradient.
        "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.1}]}", "reward.num_workers=0",
        # No replacement, so the death below surfaces (tests/test_guard.py replaces dead workers).
        "trainer.max_worker_restarts=0",
    ])
    trainer = Trainer(cfg)
    try:
        trainer.start_workers(trainer.base_model_path)
        import ray

        assert ray.is_initialized()
        initial = trainer.workers.actor.call("weights")[0]
        assert_same(trainer.workers.rollout.call("weights")[0], initial, "at start")

        metrics = [trainer.step(step) for step in range(2)]
        after = trainer.workers.actor.call("weights")[0]
        moved = sum(float((after[k] - initial[k]).abs().sum()) for k in initial)
        assert moved > 0, "the actor's weights did not change"
        assert_same(trainer.workers.rollout.call("weights")[0], after, "after sync")
        for m in metrics:
            assert m["batch/kept_completions"] == 32
            assert m["time/sync"] > 0
            assert m["throughput/rollout_tokens_per_s"] > 0
            # vLLM's float32 log-probs against the actor's recomputation: same weights, same tokens.
            assert m["logp_mismatch"] < 1e-3

        # A batch too large to prefill in one go (chunked prefill) samples fine: per-request seeds
        # broke vLLM's CPU path there ("CPU Generator does not use offset").
        width = trainer.workers.max_len - 4  # as long as the engine allows, so 64 x 8 of them exceed one prefill batch
        long_prompts = [(i, [1 + (i + j) % 10 for j in range(width)]) for i in range(64)]
        spec = SamplingSpec(n=8, temperature=1.0, max_new_tokens=4, stop_token_ids=(), seed=11)
        assert len(trainer.workers.rollout.call("generate", long_prompts, spec)[0]) == 64 * 8

        # A rollout worker that dies is reported by role and method, not as a bare Ray traceback.
        ray.kill(trainer.workers.rollout.workers[0])
        with pytest.raises(WorkerDiedError, match="rollout worker died during 'generate'"):
            trainer.step(2)
    finally:
        trainer.close()
        import ray

        ray.shutdown()
