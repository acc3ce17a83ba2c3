"""rollout.weight_sync in buckets: actor rank 0 writes shared memory the engines load from (shared_memory, the
default on one CPU host) or broadcasts to them (collective); engines end up bit-equal to the actor. The bucket
stream itself, by hand: tests/test_shared_weights.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.vllm_weights import assert_same
from trainer.recipe_config import compose_config
from trainer.loop import Trainer
from trainer.rollout.sampling import SamplingSpec
from trainer.workers.group import WorkerDiedError

pytestmark = pytest.mark.slow

BASE = [
    "engine.ray=true", "sft.steps=0", "data.num_train=32", "data.num_eval=4", "data.prompts_per_step=4",
    "rollout.n=2", "rollout.max_new_tokens=8", "actor.mini_batch_size=8", "actor.micro_batch_size=4",
    "actor.lr=1e-3", "reward.num_workers=0", "tracking.wandb.mode=disabled", "tracking.console=false",
    "resources.actor.num_cpus=0.25", "resources.rollout.num_cpus=0.25",
    # Reward by length: random-init groups always vary, so every step moves the weights.
    "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.1}]}",
]


def run_steps(tmp_path, *extra, sync="collective") -> tuple[Trainer, dict, list[dict]]:
    trainer = Trainer(compose_config([f"trainer.output_dir={tmp_path}", *BASE, f"rollout.weight_sync={sync}", *extra]))
    trainer.start_workers(trainer.base_model_path)
    initial = trainer.workers.actor.call("weights")[0]
    metrics = [trainer.step(step) for step in range(2)]
    return trainer, initial, metrics


def test_two_fsdp2_ranks_to_two_hf_engines_through_shared_memory_by_default(tmp_path):
    # Buckets of 0.25 MiB: the tiny model's layers (about 0.26 MB each) travel one or two a bucket.
    before = set(Path("/dev/shm").glob("reasoning-rl-weights-*"))
    trainer, initial, metrics = run_steps(
        tmp_path, "rollout.engine=hf", "resources.rollout.count=2", "actor.strategy=fsdp2", "resources.actor.count=2",
        "rollout.sync_bucket_mb=0.25", sync="auto",
    )
    try:
        assert trainer.workers.sync_path == "shared_memory"
        assert set(Path("/dev/shm").glob("reasoning-rl-weights-*")) == before, "names left in /dev/shm"
        assert trainer.workers.weight_layout is not None and len(trainer.workers.weight_layout) == len(initial)
        actor = trainer.workers.actor.call("weights")[0]
        assert any(not torch.equal(actor[k], initial[k]) for k in initial), "the actor's weights did not move"
        for engine in trainer.workers.rollout.call("weights"):
            for name, tensor in actor.items():
                assert torch.equal(engine[name], tensor), f"engine {name} differs from the actor after sync"
        assert all(m["time/sync"] > 0 for m in metrics)
        # One optimiser step per batch: no separate old log-probs pass; the update measured the mismatch, and
        # the next step's sampling used the synced weights.
        assert all("time/old_logprobs" not in m for m in metrics)
        assert metrics[1]["logp_mismatch"] < 1e-5
    finally:
        trainer.close()


def test_collective_into_vllm_in_buckets_and_old_logprobs_with_two_mini_batches(tmp_path):
    # vLLM reloads several partial sets of layers per sync (one reload a bucket).
    trainer, initial, metrics = run_steps(tmp_path, "rollout.engine=vllm", "actor.mini_batch_size=4",
                                          "rollout.sync_bucket_mb=0.25", "trainer.max_worker_restarts=0",
                                          sync="collective")
    try:
        actor = trainer.workers.actor.call("weights")[0]
        assert any(not torch.equal(actor[k], initial[k]) for k in initial)
        assert_same(trainer.workers.rollout.call("weights")[0], actor, "after a bucketed collective sync")
        assert all(m["time/old_logprobs"] > 0 and m["actor/optimizer_steps"] == 2 for m in metrics)
        assert metrics[1]["logp_mismatch"] < 1e-3

        # A batch too large to prefill in one go (chunked prefill) samples fine: per-request seeds
        # broke vLLM's CPU path there ("CPU Generator does not use offset").
        width = trainer.workers.max_len - 4  # as long as the engine allows, so 64 x 8 of them exceed one prefill batch
        long_prompts = [(i, [1 + (i + j) % 10 for j in range(width)]) for i in range(64)]
        spec = SamplingSpec(n=8, temperature=1.0, max_new_tokens=4, stop_token_ids=(), seed=11)
        assert len(trainer.workers.rollout.call("generate", long_prompts, spec)[0]) == 64 * 8

        # On CPU the engine's sampler helpers run eagerly: nothing reached torch.compile in its process
        # (inductor would build C++ for them on the first generate, 13 s on a fresh machine).
        import ray

        engine_process = trainer.workers.rollout.workers[0]
        frames = ray.get(engine_process.__ray_call__.remote(lambda _: dict(torch._dynamo.utils.counters["frames"])))
        assert frames.get("total", 0) == 0, frames

        # A rollout worker that dies is reported by role and method, not as a bare Ray traceback (no
        # replacement here: tests/test_guard.py replaces dead workers).
        ray.kill(trainer.workers.rollout.workers[0])
        with pytest.raises(WorkerDiedError, match="rollout worker died during 'generate_stream'"):
            trainer.step(2)
    finally:
        trainer.close()
