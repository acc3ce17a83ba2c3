"""The run's workers: actor, rollout engines and reference, as Ray actors (or in-process objects), with
their lifecycle: start, generate, weight sync (and sleep/wake when colocated on GPUs), save, close, and
the replacement of a rollout or reference worker that died (docs/reliability.md)."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Iterator

from trainer.config import Config
from trainer.rollout.sampling import Completion, SamplingSpec
from trainer.workers.group import WorkerDiedError, WorkerGroup, init_ray


def start_ray(cfg: Config) -> None:
    """Start Ray (or join ray.address) unless it is up, sized for every role of `cfg`."""
    res = cfg.resources
    # Enough logical CPUs that every role can be placed at once, in any stage of this process
    # (a DPO stage adds a reference even when kl_coef is 0).
    needed = sum(r.num_cpus * r.count for r in (res.actor, res.rollout, res.reference))
    init_ray(cfg.ray.address, cfg.ray.num_cpus, needed)


class WorkerCluster:
    def __init__(self, cfg: Config, tokenizer_path: str, max_images_per_prompt: int):
        self.cfg, self.tokenizer_path, self.max_images_per_prompt = cfg, tokenizer_path, max_images_per_prompt
        self.use_ray = cfg.engine.ray
        self.actor: WorkerGroup | None = None
        self.rollout: WorkerGroup | None = None
        self.reference: WorkerGroup | None = None
        self.max_len: int | None = None  # the rollout engines' context, set by start()
        self.placement = None  # role -> placement-group seats, once Ray is up
        self.weight_layout = None  # tensor layout of the actor->rollout weights (collective, shared_memory)
        self.sync_path: str | None = None  # rollout.weight_sync, with auto resolved, from start()
        self.policy_path: str | None = None  # what the engines and the reference start from, from start()
        self.restarts = 0  # workers replaced after dying (trainer.max_worker_restarts)
        res = cfg.resources
        # Colocated on GPUs, the rollout engine frees its memory while the actor trains.
        self.rollout_sleeps = res.placement == "colocate" and res.rollout.num_gpus > 0 and cfg.rollout.engine == "vllm"

    # ----- start --------------------------------------------------------------------------------
    def start_actor(self, model_path: str, wait: bool = True) -> WorkerGroup:
        """The actor role alone (SFT needs no rollout); `start` keeps an actor already running.
        `wait=False` returns while its workers are being built; `actor_ready()` finishes the start."""
        self._init_ray()
        from trainer.workers.actor import ActorWorker

        cfg = self.cfg
        self.actor = WorkerGroup(
            "actor", ActorWorker, cfg.resources.actor, use_ray=self.use_ray, ranked=True, slots=self._slots("actor"),
            model_path=model_path, actor=cfg.actor, algorithm=cfg.algorithm,
            dtype=cfg.model.dtype, seed=cfg.trainer.seed, max_len=cfg.rollout.max_new_tokens, wait=False,
        )
        return self.actor_ready() if wait else self.actor

    def actor_ready(self) -> WorkerGroup:
        self.actor.ready()
        if self.cfg.actor.strategy != "torch":
            # Sharded strategies: rank 0 names the rendezvous, then all ranks join at once.
            host, port = self.actor.call_one(0, "rendezvous_address")
            self.actor.call("init_distributed", host, port)
        return self.actor

    def start(self, policy_path: str, max_model_len: int) -> None:
        """Actor (unless running), rollout engines and, with a KL term, the reference, all from `policy_path`."""
        cfg = self.cfg
        self._init_ray()
        self.policy_path = policy_path
        # Actor and engines are built side by side (their imports and model loads overlap); the engines,
        # which take longer (vLLM's import and build), are asked for first.
        new_actor = self.actor is None
        self.start_rollout(policy_path, max_model_len, wait=False)
        if new_actor:
            self.start_actor(policy_path, wait=False)
        if cfg.algorithm.kl_coef > 0:
            self.reference = self.start_reference(policy_path, wait=False)
        if new_actor:
            self.actor_ready()
        self.rollout.ready()
        if self.reference is not None:
            self.reference.ready()
        self.sync_path = self._sync_path()
        self._open_sync()

    def _open_sync(self) -> None:
        if self.sync_path in ("collective", "shared_memory"):
            self._open_weight_sync()

    def start_rollout(self, model_path: str, max_model_len: int, wait: bool = True) -> WorkerGroup:
        """The rollout engines alone (a standalone evaluation needs nothing else), sized for `max_model_len`
        tokens of prompt and response; `wait=False`: see WorkerGroup."""
        self._init_ray()
        from trainer.workers.rollout import RolloutWorker

        cfg = self.cfg
        self.max_len = max_model_len
        self.rollout = WorkerGroup(
            "rollout", RolloutWorker, cfg.resources.rollout, use_ray=self.use_ray, slots=self._slots("rollout"),
            env_vars={"VLLM_CPU_KVCACHE_SPACE": str(cfg.rollout.kv_cache_gib), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
            model_path=model_path, tokenizer=self.tokenizer_path, engine=cfg.rollout.engine, dtype=cfg.model.dtype,
            seed=cfg.trainer.seed, threads=cfg.rollout.threads,
            **({"max_model_len": max_model_len, "kv_cache_gib": cfg.rollout.kv_cache_gib,
                "gpu_memory_utilization": cfg.rollout.gpu_memory_utilization,
                "max_num_seqs": cfg.rollout.max_num_seqs, "sleep_mode": self.rollout_sleeps,
                "enforce_eager": cfg.rollout.enforce_eager,
                "tensor_parallel_size": cfg.rollout.tensor_parallel_size,
                "max_images_per_prompt": self.max_images_per_prompt,
                "image_min_pixels": cfg.model.image_min_pixels, "image_max_pixels": cfg.model.image_max_pixels}
               if cfg.rollout.engine == "vllm" else {}),
            wait=False,
        )
        if wait:
            self.rollout.ready()
        return self.rollout

    def start_reference(self, model_path: str, wait: bool = True) -> WorkerGroup:
        """A frozen copy of `model_path` for log-probs (the KL term; DPO's reference); `wait=False`: see
        WorkerGroup."""
        from trainer.workers.reference import ReferenceWorker

        cfg = self.cfg
        return WorkerGroup(
            "reference", ReferenceWorker, cfg.resources.reference, use_ray=self.use_ray, slots=self._slots("reference"),
            model_path=model_path, dtype=cfg.model.dtype, micro_batch_size=cfg.actor.micro_batch_size,
            threads=cfg.actor.threads, max_tokens_per_micro_batch=cfg.actor.max_tokens_per_micro_batch,
            logits_chunk_size=cfg.actor.logits_chunk_size, share_prompt_forward=cfg.actor.share_prompt_forward,
            wait=wait,
        )

    def _init_ray(self) -> None:
        if self.use_ray:
            start_ray(self.cfg)

    def _slots(self, role: str) -> list | None:
        """This role's placement-group seats (resources.placement), planned once for all roles."""
        if not self.use_ray:
            return None
        if self.placement is None:
            from trainer.workers.placement import plan_placement

            roles = ["actor", "rollout"] + (["reference"] if self.cfg.algorithm.kl_coef > 0 else [])
            self.placement = plan_placement(self.cfg.resources, roles)
        return self.placement.get(role)

    # ----- generate and sync --------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], spec: SamplingSpec, first_index: int = 0,
                 media: list | None = None) -> list[Completion]:
        """n completions per prompt, in prompt order; `first_index` keeps seeds distinct across calls of a step.
        `media[i]` carries prompt i's images."""
        done = [c for part in self.generate_stream(prompts, spec, first_index, media) for c in part]
        return sorted(done, key=lambda c: (c.prompt_index, c.sample))

    def generate_stream(self, prompts: list[list[int]], spec: SamplingSpec, first_index: int = 0,
                        media: list | None = None) -> Iterator[list[Completion]]:
        """`generate` in parts as the engines finish completions; each of a prompt's n completions comes
        once. When an engine dies, the prompts not yet wholly handed out are generated again on its
        replacement and only their missing completions are kept (the same tokens where the engine seeds
        each request, vLLM on GPUs; new draws otherwise)."""
        if media is None:
            indexed = [(first_index + i, p) for i, p in enumerate(prompts)]
        else:
            indexed = [(first_index + i, p, m) for i, (p, m) in enumerate(zip(prompts, media))]
        expected = {(item[0], j) for item in indexed for j in range(spec.n)}
        missing = set(expected)
        while missing:
            try:
                with closing(self.rollout.stream("generate_stream", indexed, spec)) as stream:
                    for part in stream:
                        keys = [(c.prompt_index, c.sample) for c in part]
                        if len(set(keys)) != len(keys) or not set(keys) <= expected:
                            raise RuntimeError("rollout returned completions that are not this call's")
                        fresh = [c for c, key in zip(part, keys) if key in missing]
                        missing.difference_update(keys)
                        if fresh:
                            yield fresh
                if missing:
                    raise RuntimeError(f"rollout returned {len(missing)} completions too few")
            except WorkerDiedError as error:
                self._restart(error, "rollout")
                indexed = [item for item in indexed if any((item[0], j) in missing for j in range(spec.n))]

    def sleep_rollout(self) -> None:
        """Free the rollout engines' GPU memory for the actor (colocated on GPUs only)."""
        if self.rollout_sleeps:
            self.rollout.call("sleep")

    def _sync_path(self) -> str:
        """rollout.weight_sync, with `auto` resolved: in-process engines take the weights as they are;
        Ray workers on one CPU host share memory; otherwise a gloo/NCCL broadcast."""
        chosen = self.cfg.rollout.weight_sync
        if chosen != "auto":
            return chosen
        res = self.cfg.resources
        if not self.use_ray:
            return "object_store"  # no Ray: the engine gets the actor's tensors in this process
        if res.actor.num_gpus > 0 or res.rollout.num_gpus > 0:
            return "collective"
        from trainer.rollout.weight_sync import buffer_bytes, plan_buckets, shared_memory_room

        hosts = {self.actor.call_one(0, "host"), *self.rollout.call("host")}
        room = shared_memory_room(buffer_bytes(plan_buckets(self._layout(), self.bucket_bytes)))
        return "shared_memory" if len(hosts) == 1 and room else "collective"

    def _open_weight_sync(self) -> None:
        """Actor rank 0 and the rollout engines join one group for the bucket stream (weight_sync.py). With
        shared_memory the buffer's file name goes once all have mapped it: the memory is freed when the last
        process holding it ends."""
        import uuid

        host, port = self.actor.call_one(0, "rendezvous_address")
        size, layout = 1 + len(self.rollout), self._layout()
        shared_file = None
        if self.sync_path == "shared_memory":
            shared_file = f"/dev/shm/reasoning-rl-weights-{uuid.uuid4().hex[:12]}"
        args = (layout, self.bucket_bytes, shared_file)
        try:
            sender = self.actor.call_async("open_weight_sync", host, port, size, *args)
            receivers = self.rollout.call_each_async(
                "open_weight_sync", [(host, port, i + 1, size, *args) for i in range(size - 1)])
            self.actor.wait(sender, "open_weight_sync")
            self.rollout.wait(receivers, "open_weight_sync")
        finally:
            if shared_file is not None:
                Path(shared_file).unlink(missing_ok=True)

    @property
    def bucket_bytes(self) -> int:
        return int(self.cfg.rollout.sync_bucket_mb * (1 << 20))

    def sync_weights(self) -> None:
        """Push the actor's weights into every rollout engine, in place (no restart, no disk)."""
        self._recovering("rollout", self._push_weights)

    def _push_weights(self) -> None:
        if self.rollout_sleeps:
            self.rollout.call("wake_up")
        if self.sync_path in ("collective", "shared_memory"):
            sent = self.actor.call_async("send_weights")
            received = self.rollout.call_async("receive_weights")
            # The engines first: one that died is replaced (_recovering), and the sender then fails too.
            self.rollout.wait(received, "receive_weights")
            self.actor.wait(sent, "send_weights")
            return
        weights = self.actor.call_async("weights")[0]
        self.rollout.call("load_weights", weights)

    # ----- recovery -----------------------------------------------------------------------------
    def _recovering(self, role: str, call):
        """`call()`, and again after replacing `role`'s workers each time one dies (up to
        trainer.max_worker_restarts in the run). Each call is a whole unit (a weight push, a batch's reference
        log-probs), so repeating it neither loses nor repeats work."""
        while True:
            try:
                return call()
            except WorkerDiedError as error:
                self._restart(error, role)

    def _restart(self, error: WorkerDiedError, role: str) -> None:
        """Replace `role`'s workers after `error`, or raise it: another role died, or the restarts are spent."""
        from trainer.console import say

        if error.role != role or self.restarts >= self.cfg.trainer.max_worker_restarts:
            raise error
        self.restarts += 1
        say(f"[recovery] {error}; restarting the {role} workers "
            f"({self.restarts} of trainer.max_worker_restarts={self.cfg.trainer.max_worker_restarts})")
        self._replace(role)

    def _replace(self, role: str) -> None:
        """New `role` workers from the run's policy folder; rollout engines then get the actor's current weights."""
        old = getattr(self, role)
        try:
            old.shutdown(close_timeout_s=5.0)
        except Exception:  # noqa: BLE001 - the group is half dead; what is left goes with it
            pass
        if role == "reference":
            self.reference = self.start_reference(self.policy_path)
            return
        self.start_rollout(self.policy_path, self.max_len)
        self._open_sync()
        self._push_weights()

    def reference_log_probs(self, batch, temperature: float, pending: list | None = None):
        """The reference's log-probs of `batch`: from `pending` (an earlier `call_async`) when given, and
        computed again on new workers if the reference died."""
        def compute():
            nonlocal pending
            if pending is not None:
                refs, pending = pending, None
                return self.reference.wait(refs, "log_probs")[0]
            return self.reference.call("log_probs", batch, temperature)[0]

        return self._recovering("reference", compute)

    def _layout(self) -> list:
        """The weights' layout, asked of the actor once (collective for sharded strategies)."""
        if self.weight_layout is None:
            self.weight_layout = self.actor.call("weight_layout")[0]
        return self.weight_layout

    def weight_bytes(self) -> int:
        """Bytes one weight sync moves to each engine."""
        from trainer.rollout.weight_sync import layout_bytes

        return layout_bytes(self._layout())

    # ----- save and close -----------------------------------------------------------------------
    def save_model(self, out_dir: Path, tokenizer_or_processor) -> Path:
        """The actor's current weights and the tokenizer (or a vision model's processor, which writes the
        tokenizer too) as a Hugging Face folder, so the next stage loads it."""
        out_dir.mkdir(parents=True, exist_ok=True)
        self.actor.call("save_pretrained", str(out_dir), self.bucket_bytes)
        tokenizer_or_processor.save_pretrained(out_dir)
        return out_dir

    def stop_actor(self) -> None:
        self.actor.shutdown()
        self.actor = None

    def close(self) -> None:
        for group in (self.rollout, self.reference, self.actor):
            if group is not None:
                group.shutdown()
        self.rollout = self.reference = self.actor = None
        if self.placement:
            from trainer.workers.placement import remove_placement

            remove_placement(self.placement)
            self.placement = None
