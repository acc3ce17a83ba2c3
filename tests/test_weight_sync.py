"""rollout.weight_sync: actor rank 0 broadcasts to every engine (collective) or writes shared memory they load
from (shared_memory, the default on one CPU host); engines end up bit-equal to the actor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_e2e_ray_vllm import assert_same
from trainer.recipe_config import compose_config
from trainer.loop import Trainer

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


def test_broadcast_from_two_fsdp2_ranks_to_two_hf_engines(tmp_path):
    trainer, initial, metrics = run_steps(
        tmp_path, "rollout.engine=hf", "resources.rollout.count=2", "actor.strategy=fsdp2", "resources.actor.count=2",
        "rollout.sync_bucket_mb=0.25",
    )
    try:
        assert trainer.workers.weight_layout is not None and len(trainer.workers.weight_layout) == len(initial)
        actor = trainer.workers.actor.call("weights")[0]
        assert any(not torch.equal(actor[k], initial[k]) for k in initial), "the actor's weights did not move"
        for engine in trainer.workers.rollout.call("weights"):
            for name, tensor in actor.items():
                assert torch.equal(engine[name], tensor), f"engine {name} differs from the actor after sync"
        assert all(m["time/sync"] > 0 for m in metrics)
        # The next step's sampling used the synced weights: log-probs agree with the actor's.
        assert metrics[1]["logp_mismatch"] < 1e-5
    finally:
        trainer.close()


def test_broadcast_into_vllm(tmp_path):
    trainer, initial, metrics = run_steps(tmp_path, "rollout.engine=vllm")
    try:
        actor = trainer.workers.actor.call("weights")[0]
        assert any(not torch.equal(actor[k], initial[k]) for k in initial)
        assert_same(trainer.workers.rollout.call("weights")[0], actor, "after a collective sync")
        assert metrics[1]["logp_mismatch"] < 1e-3
    finally:
        trainer.close()


def test_shared_memory_by_default_into_two_hf_engines(tmp_path):
    before = set(Path("/dev/shm").glob("reasoning-rl-weights-*"))
    trainer, initial, metrics = run_steps(tmp_path, "rollout.engine=hf", "resources.rollout.count=2", sync="auto")
    try:
        assert trainer.workers.sync_path == "shared_memory"
        assert set(Path("/dev/shm").glob("reasoning-rl-weights-*")) == before, "names left in /dev/shm"
        actor = trainer.workers.actor.call("weights")[0]
        assert any(not torch.equal(actor[k], initial[k]) for k in initial), "the actor's weights did not move"
        for engine in trainer.workers.rollout.call("weights"):
            for name, tensor in actor.items():
                assert torch.equal(engine[name], tensor), f"engine {name} differs from the actor after sync"
        # One optimiser step per batch: no separate old log-probs pass; the update measured the mismatch.
        assert all("time/old_logprobs" not in m for m in metrics)
        assert metrics[1]["logp_mismatch"] < 1e-5
    finally:
        trainer.close()


def test_shared_memory_into_vllm_in_buckets_and_old_logprobs_with_two_mini_batches(tmp_path):
    # Buckets of 0.25 MiB: the tiny model's layers (about 0.26 MB each) travel one or two a bucket, so vLLM
    # reloads several partial sets of layers per sync.
    trainer, initial, metrics = run_steps(tmp_path, "rollout.engine=vllm", "actor.mini_batch_size=4",
                                          "rollout.sync_bucket_mb=0.25", sync="shared_memory")
    try:
        actor = trainer.workers.actor.call("weights")[0]
        assert any(not torch.equal(actor[k], initial[k]) for k in initial)
        assert_same(trainer.workers.rollout.call("weights")[0], actor, "after a shared-memory sync")
        assert all(m["time/old_logprobs"] > 0 and m["actor/optimizer_steps"] == 2 for m in metrics)
        assert metrics[1]["logp_mismatch"] < 1e-3
    finally:
        trainer.close()
