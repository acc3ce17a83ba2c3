"""Where each role's workers run: Ray placement groups.

* `split` (default): each role gets its own placement group, packed (a role's workers on as few
  nodes as possible, so the actor's ranks talk over the fastest links). Rollout engines hold
  their own GPUs.
* `colocate`: one bundle per index i shared by actor rank i, rollout engine i and reference i,
  so they sit on the same GPU (give each a fraction: `resources.*.num_gpus=0.5`). On GPU the
  rollout engine sleeps during the update (vLLM sleep mode frees its KV cache and weights).
* `none`: no placement groups; Ray places every worker wherever it fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.config import ResourcesConfig, RoleResources

PLACEMENTS = ("split", "colocate", "none")


@dataclass
class Slot:
    """A worker's seat: a placement group and a bundle index in it."""

    group: object
    bundle: int


def _bundle(*roles: RoleResources) -> dict[str, float]:
    bundle = {"CPU": sum(r.num_cpus for r in roles)}
    gpus = sum(r.num_gpus for r in roles)
    if gpus:
        bundle["GPU"] = gpus
    return bundle


def _ready(group, what: str, bundles: list[dict], timeout_s: float):
    import ray

    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        ray.util.remove_placement_group(group)
        raise RuntimeError(
            f"placement for {what} not possible after {timeout_s:.0f}s: it asks for bundles {bundles}; "
            f"the cluster has {ray.cluster_resources()} (resources.placement, resources.*)"
        )
    return group


def plan_placement(resources: ResourcesConfig, roles: list[str], timeout_s: float = 600.0) -> dict[str, list[Slot]]:
    """Create the placement groups for `roles` (names under `resources`) and return each worker's slot."""
    import ray.util

    mode = resources.placement
    if mode not in PLACEMENTS:
        raise ValueError(f"resources.placement={mode!r}: expected one of {PLACEMENTS}")
    if mode == "none":
        return {}
    specs = {role: getattr(resources, role) for role in roles}
    if mode == "split":
        slots = {}
        for role, spec in specs.items():
            bundles = [_bundle(spec) for _ in range(spec.count)]
            group = _ready(ray.util.placement_group(bundles, strategy="PACK"), role, bundles, timeout_s)
            slots[role] = [Slot(group, i) for i in range(spec.count)]
        return slots
    counts = {role: spec.count for role, spec in specs.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"resources.placement=colocate puts worker i of every role in bundle i, so the counts must "
                         f"be equal: {', '.join(f'resources.{r}.count={c}' for r, c in counts.items())}")
    count = next(iter(counts.values()))
    bundles = [_bundle(*specs.values()) for _ in range(count)]
    group = _ready(ray.util.placement_group(bundles, strategy="PACK"), "+".join(roles), bundles, timeout_s)
    return {role: [Slot(group, i) for i in range(count)] for role in roles}


def remove_placement(slots: dict[str, list[Slot]]) -> None:
    import ray.util

    for group in {id(s.group): s.group for seats in slots.values() for s in seats}.values():
        ray.util.remove_placement_group(group)
