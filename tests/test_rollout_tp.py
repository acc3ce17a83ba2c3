"""rollout.tensor_parallel_size=2: one vLLM engine sharded over two processes (CPU core groups here).

The check that matters is after a weight sync: the sharded engine's log-probs must equal the
actor's recomputation, which holds only if every shard received its slice of the new weights.
"""

from __future__ import annotations

import pytest

from trainer.recipe_config import compose_config
from trainer.config import validate
from trainer.rollout.vllm_engine import cpu_binding
from trainer.loop import Trainer


def test_cpu_binding_gives_each_shard_its_own_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 6, 7})
    assert cpu_binding(2) == "0,1,2|3,6,7"
    assert cpu_binding(3) == "0,1|2,3|6,7"
    with pytest.raises(ValueError, match="tensor_parallel_size=8 needs a core per shard"):
        cpu_binding(8)


@pytest.mark.parametrize("overrides, message", [
    (["rollout.tensor_parallel_size=2", "rollout.engine=hf"], "needs rollout.engine=vllm"),
    (["rollout.tensor_parallel_size=2", "resources.rollout.num_gpus=1"], r"resources.rollout.num_gpus=1(\.0)?: set it to 2"),
    (["rollout.tensor_parallel_size=0"], r"rollout.tensor_parallel_size=0: expected a value in \[1, inf\)"),
])
def test_bad_tensor_parallel_settings_name_the_keys(overrides, message):
    with pytest.raises(ValueError, match=message):
        validate(compose_config(overrides))


@pytest.mark.slow
def test_sharded_vllm_engine_follows_the_actor(tmp_path):
    cfg = compose_config([
        f"trainer.output_dir={tmp_path}", "engine.ray=true", "rollout.engine=vllm", "rollout.tensor_parallel_size=2",
        # Ray's CPU count only gates placement (vLLM starts its shard processes itself), and the suite's
        # shared local Ray has 2: ask for one per role.
        "sft.steps=0", "data.num_train=32", "data.num_eval=4",
        "data.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=12", "actor.mini_batch_size=16",
        "actor.micro_batch_size=8", "actor.lr=2e-3", "reward.num_workers=0", "tracking.wandb.mode=disabled",
        "tracking.console=false",
        # Reward by length: random-init groups always vary, so every step moves the weights.
        "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.1}]}",
    ])
    trainer = Trainer(cfg)
    try:
        trainer.start_workers(trainer.base_model_path)
        initial = trainer.workers.actor.call("weights")[0]
        metrics = [trainer.step(step) for step in range(3)]
        after = trainer.workers.actor.call("weights")[0]
        assert sum(float((after[k] - initial[k]).abs().max()) for k in initial) > 1e-2, "the weights did not move"
        # Step 0 samples from the initial weights, steps 1 and 2 from weights synced into both shards.
        for m in metrics:
            assert m["logp_mismatch"] < 1e-4, m["logp_mismatch"]
    finally:
        trainer.close()
        import ray

        ray.shutdown()
