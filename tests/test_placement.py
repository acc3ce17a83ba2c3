"""Placement groups: split gives each role its own packed group; colocate seats worker i of every role
in bundle i of one group."""

from __future__ import annotations

import re

import pytest

from trainer.recipe_config import compose_config
from trainer.config import ResourcesConfig, RoleResources
from trainer.loop import Trainer
from trainer.workers.placement import plan_placement

pytestmark = pytest.mark.slow

BASE = [
    "engine.ray=true", "rollout.engine=hf", "sft.steps=0", "data.num_train=16", "data.num_eval=4",
    "data.prompts_per_step=2", "rollout.n=2", "rollout.max_new_tokens=4", "actor.mini_batch_size=4",
    "actor.micro_batch_size=4", "reward.num_workers=0", "tracking.wandb.mode=disabled", "tracking.console=false",
    "resources.actor.num_cpus=0.25", "resources.rollout.num_cpus=0.25", "resources.reference.num_cpus=0.25",
]


def group_of(worker) -> str:
    """The placement group a Ray actor runs in, as Ray reports it from inside the actor."""
    import ray

    return ray.get(worker.__ray_call__.remote(lambda self: ray.get_runtime_context().get_placement_group_id()))


def free_in_bundles(group_id: str) -> dict[int, float]:
    """CPUs left in each bundle of a placement group (Ray names them CPU_group_<index>_<group id>)."""
    import ray

    available, free = ray.available_resources(), {}
    for key in ray.cluster_resources():
        if (m := re.fullmatch(r"CPU_group_(\d+)_([0-9a-f]+)", key)) and m.group(2) == group_id:
            free[int(m.group(1))] = available.get(key, 0.0)  # a used-up resource is left out of `available`
    return free


def test_colocate_seats_worker_i_of_every_role_in_bundle_i(tmp_path):
    # Distinct CPU sizes (0.1 + 0.2 + 0.4 = one bundle): a bundle is full only with one worker of each role.
    trainer = Trainer(compose_config([
        f"trainer.output_dir={tmp_path}", *BASE, "resources.placement=colocate", "resources.rollout.count=2",
        "resources.actor.count=2", "resources.reference.count=2", "actor.strategy=fsdp2", "algorithm.kl_coef=0.01",
        "resources.actor.num_cpus=0.1", "resources.rollout.num_cpus=0.2", "resources.reference.num_cpus=0.4",
    ]))
    try:
        trainer.start_workers(trainer.base_model_path)
        groups = {group_of(w) for role in ("actor", "rollout", "reference") for w in getattr(trainer.workers, role).workers}
        assert len(groups) == 1
        (group_id,) = groups
        free = free_in_bundles(group_id)
        assert sorted(free) == [0, 1] and all(v == pytest.approx(0.0, abs=1e-6) for v in free.values()), free
        for role in ("actor", "rollout", "reference"):
            assert [slot.bundle for slot in trainer.workers.placement[role]] == [0, 1], role
        metrics = trainer.step(0)  # the roles still work together when seated this way
        assert metrics["batch/kept_completions"] == 4 and metrics["logp_mismatch"] < 1e-4
    finally:
        trainer.close()
    import ray

    assert all(pg["state"] == "REMOVED" for pg in ray.util.placement_group_table().values())


def test_split_gives_each_role_its_own_group(tmp_path):
    trainer = Trainer(compose_config([f"trainer.output_dir={tmp_path}", *BASE, "resources.rollout.count=2"]))
    try:
        trainer.start_workers(trainer.base_model_path)
        actor_group = group_of(trainer.workers.actor.workers[0])
        rollout_groups = {group_of(w) for w in trainer.workers.rollout.workers}
        assert len(rollout_groups) == 1 and actor_group not in rollout_groups
        # Each rollout bundle (0.25 CPU) holds one engine: both are full.
        free = free_in_bundles(rollout_groups.pop())
        assert sorted(free) == [0, 1] and all(v == pytest.approx(0.0, abs=1e-6) for v in free.values()), free
    finally:
        trainer.close()


def test_colocate_needs_equal_counts_and_fitting_bundles():
    resources = ResourcesConfig(actor=RoleResources(count=2), rollout=RoleResources(count=1), placement="colocate")
    with pytest.raises(ValueError, match="resources.actor.count=2, resources.rollout.count=1"):
        plan_placement(resources, ["actor", "rollout"])
    from trainer.workers.group import init_ray

    init_ray(None, None, 2)
    too_big = ResourcesConfig(rollout=RoleResources(num_gpus=1), placement="split")
    with pytest.raises(RuntimeError, match="placement for rollout not possible.*'GPU': 1"):
        plan_placement(too_big, ["rollout"], timeout_s=2)
