"""Run a worker class as N Ray actors, or as one in-process object, behind one calling convention.

The controller calls `group.call("method", ...)` (same arguments to every worker)
or `group.stream("method", items, ...)` (items split across workers, each part their
generators yield as it comes). A worker that dies raises `WorkerDiedError` naming the
role and index instead of a bare Ray traceback.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

from trainer.config import RoleResources


class WorkerDiedError(RuntimeError):
    def __init__(self, message: str, role: str | None = None):
        super().__init__(message)
        self.role = role


def init_ray(address: str | None, num_cpus: int | None, needed_cpus: float) -> None:
    import ray

    if ray.is_initialized():
        return
    # Workers are offline exactly when the controller is (HF_HUB_OFFLINE or model.offline).
    offline = {"HF_HUB_OFFLINE": os.environ["HF_HUB_OFFLINE"]} if "HF_HUB_OFFLINE" in os.environ else {}
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", **offline}}
    # Inside a Ray Job (python -m launch submit) RAY_ADDRESS names the cluster: join it.
    address = address or os.environ.get("RAY_ADDRESS")
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        # A submitted job already has its runtime env (launch.jobs sets these variables); Ray
        # refuses a driver env that names the same keys.
        env = None
    # Worker output reaches the driver (and so the run's logs/console.log) unless RAY_LOG_TO_DRIVER=0 (the tests).
    to_driver = os.environ.get("RAY_LOG_TO_DRIVER", "1").lower() not in ("0", "false")
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=to_driver)
    else:
        # Logical CPUs only gate placement: the roles run one after another, never all at once.
        cpus = num_cpus or max(os.cpu_count() or 1, int(needed_cpus + 0.999))
        ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=env, log_to_driver=to_driver)


class WorkerGroup:
    def __init__(self, role: str, cls: type, resources: RoleResources, *, use_ray: bool,
                 env_vars: dict[str, str] | None = None, start_timeout_s: float = 900.0, ranked: bool = False,
                 slots: list | None = None, wait: bool = True, **init_kwargs: Any):
        """`ranked=True` gives each worker `rank` and `world_size` keyword arguments (data-parallel roles);
        `slots` (from trainer.workers.placement) seats worker i in a placement group bundle. `wait=False`
        returns while Ray workers are still being built (so roles start side by side): call `ready()`."""
        self.role, self.use_ray, self.cls = role, use_ray, cls
        self.resources, self.start_timeout_s = resources, start_timeout_s

        def kwargs_for(index: int) -> dict[str, Any]:
            return {**init_kwargs, "rank": index, "world_size": resources.count} if ranked else init_kwargs

        if use_ray:
            import ray

            actor_cls = ray.remote(cls)
            options = dict(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                           runtime_env={"env_vars": env_vars or {}})
            self.workers = [actor_cls.options(**options, **self._seat(slots, i)).remote(**kwargs_for(i))
                            for i in range(resources.count)]
            if wait:
                self.ready()
        else:
            if resources.count != 1:
                raise ValueError(f"resources.{role}.count={resources.count}: in-process mode runs one worker per role")
            for key, value in (env_vars or {}).items():
                os.environ.setdefault(key, value)
            self.workers = [cls(**kwargs_for(0))]

    def ready(self) -> "WorkerGroup":
        """Wait until every worker is built (at once in-process)."""
        if self.use_ray:
            # Surface construction failures here, not at the first call; and never wait forever for
            # resources the cluster cannot give.
            self._wait_placed(self.resources, self.start_timeout_s)
            self._get([w.__ray_ready__.remote() for w in self.workers], "start")
        return self

    @staticmethod
    def _seat(slots: list | None, index: int) -> dict:
        if not slots:
            return {}
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=slots[index].group, placement_group_bundle_index=slots[index].bundle)}

    def _wait_placed(self, resources: RoleResources, timeout_s: float) -> None:
        import ray

        refs = [w.__ray_ready__.remote() for w in self.workers]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if len(ready) < len(refs):
            raise WorkerDiedError(
                f"{self.role} workers not started after {timeout_s:.0f}s: each asks for {resources.num_cpus} CPUs and "
                f"{resources.num_gpus} GPUs (resources.{self.role}); the cluster has {ray.available_resources()} "
                f"free of {ray.cluster_resources()}"
            )

    def __len__(self) -> int:
        return len(self.workers)

    def _get(self, refs: list, method: str) -> list:
        import ray

        try:
            return ray.get(refs)
        except ray.exceptions.RayActorError as error:
            raise self._died(method, error) from None

    def _died(self, method: str, error: Exception) -> WorkerDiedError:
        return WorkerDiedError(f"{self.role} worker died during {method!r}: {error}", self.role)

    def call(self, method: str, *args: Any, **kwargs: Any) -> list:
        """Call `method` on every worker with the same arguments; one result per worker."""
        if not self.use_ray:
            return [getattr(self.workers[0], method)(*args, **kwargs)]
        refs = [getattr(w, method).remote(*args, **kwargs) for w in self.workers]
        return self._get(refs, method)

    def call_one(self, index: int, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call `method` on one worker only."""
        if not self.use_ray:
            return getattr(self.workers[index], method)(*args, **kwargs)
        return self._get([getattr(self.workers[index], method).remote(*args, **kwargs)], method)[0]

    def call_async(self, method: str, *args: Any, **kwargs: Any) -> list:
        """Like `call` but returns Ray object refs (in-process: plain results) for chaining."""
        if not self.use_ray:
            return [getattr(self.workers[0], method)(*args, **kwargs)]
        return [getattr(w, method).remote(*args, **kwargs) for w in self.workers]

    def call_each_async(self, method: str, per_worker: list[tuple]) -> list:
        """Start `method` on each worker with its own arguments (Ray only); returns object refs."""
        return [getattr(w, method).remote(*args) for w, args in zip(self.workers, per_worker)]

    def wait(self, refs: list, method: str) -> list:
        """Results of refs from `call_async` / `call_each_async`; a dead worker raises WorkerDiedError."""
        return self._get(refs, method) if self.use_ray else refs

    def stream(self, method: str, items: list, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Split `items` into contiguous shards, one per worker, and run the generator `method` on each: every
        part any of them yields, as it comes (in-process: in the order the worker yields them)."""
        if not self.use_ray:
            yield from getattr(self.workers[0], method)(items, *args, **kwargs)
            return
        import ray

        size = -(-len(items) // len(self.workers))
        shards = [items[i * size : (i + 1) * size] for i in range(len(self.workers))]
        running = [getattr(w, method).remote(s, *args, **kwargs) for w, s in zip(self.workers, shards) if s]
        try:
            while running:
                ready, _ = ray.wait(running, num_returns=1)
                for parts in ready:
                    try:
                        ref = next(parts)
                    except StopIteration:
                        running.remove(parts)
                        continue
                    yield self._get([ref], method)[0]
        # next() raises these when the worker (or the node holding a part) died before the part was read.
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as error:
            raise self._died(method, error) from None
        finally:  # a caller that stops early: the workers stop at their next part (RolloutWorker.generate_stream)
            for parts in running:
                ray.cancel(parts)

    def shutdown(self, close_timeout_s: float = 30.0) -> None:
        """Let workers with a `close` method release what outlives them (files in /dev/shm), then stop them."""
        if not self.use_ray:
            if hasattr(self.cls, "close"):
                for worker in self.workers:
                    worker.close()
            self.workers = []
            return
        import ray

        if hasattr(self.cls, "close"):
            refs = [worker.close.remote() for worker in self.workers]
            ray.wait(refs, num_returns=len(refs), timeout=close_timeout_s)
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
