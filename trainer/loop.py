"""The single controller: one function per RL step, driving rollout, reference and actor workers.

    prompts -> rollout.generate -> rewards -> advantages -> reference/old log-probs
            -> actor.update -> weight sync (actor -> rollout) -> metrics, checkpoint
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from data.curriculum import TaskHomogeneousSampler, curriculum_stages
from data.sampler import PromptSampler
from data.schema import Sample
from rewards.compose import accuracy_scores
from rewards.math_answer import final_boxed
from trainer.algorithms import get_advantage
from trainer.algorithms.bpo import auto_think_share, mode_metrics
from trainer.batch import TrainBatch
from trainer.checkpoint import capture_rng_state, latest_checkpoint, load_checkpoint, restore_rng_state, save_checkpoint
from trainer.chat import ChatFormat
from trainer.config import Config, validate
from trainer.data_setup import load_prompt_sets
from trainer.engines.sampling import Completion, SamplingSpec
from trainer.modeling import apply_offline_mode, context_length, load_tokenizer, resolve_model_path, resolve_tokenizer_path
from trainer.multiturn import PatientSimulator, multiturn_rollouts
from trainer.rollouts import Rollouts
from trainer.tracking import Tracker
from trainer.workers.group import WorkerGroup, init_ray


class Trainer:
    def __init__(self, cfg: Config):
        validate(cfg)
        self.cfg = cfg
        self.run_dir = Path(cfg.trainer.output_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.use_ray = cfg.engine.ray
        self.resume_from = self._find_resume_checkpoint()
        seed = cfg.trainer.seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

        apply_offline_mode(cfg.model.offline)  # before any hub call (model, tokenizer, data)
        self.base_model_path = self._prepare_model()
        self.tokenizer_path = resolve_tokenizer_path(cfg.model, self.base_model_path)
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.chat = ChatFormat.from_config(self.tokenizer, self.base_model_path, cfg.data)
        self.processor = None  # the vision-language processor, loaded with the first image prompt
        self._image_prompts: dict[int, tuple[list[int], str]] = {}  # id(sample) -> (token ids, chat text)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.train_samples, self.eval_samples = load_prompt_sets(cfg, image_dir=self.run_dir / "images")
        self.max_images_per_prompt = max((len(s.images) for s in self.train_samples + self.eval_samples), default=0)
        if cfg.rollout.engine == "vllm" and self.max_images_per_prompt and not self.use_ray:
            raise ValueError(
                "rollout.engine=vllm with image prompts needs engine.ray=true: vLLM runs vision models on its "
                "Transformers backend, which patches transformers' model classes in its process, so rollout needs "
                "a process of its own (or use rollout.engine=hf)"
            )
        self.train_samples = self._within_context(self.train_samples, "train")
        self.eval_samples = self._within_context(self.eval_samples, "held-out")
        self.sampler = self._make_sampler()
        from rewards.compose import RewardComposer

        self.rewards = RewardComposer(
            cfg.reward.tasks,
            num_workers=cfg.reward.num_workers,
            timeout_s=cfg.reward.timeout_s,
            group_transforms=cfg.reward.group_transforms or None,
        )
        self.weighter = None
        if cfg.reward.weighting.rule:
            from rewards.weighting import TaskWeighter

            weighting = cfg.reward.weighting
            self.weighter = TaskWeighter(weighting.rule, dict(weighting.params), ema=weighting.ema)
        self.tracker = Tracker(
            self.run_dir,
            project=cfg.tracking.wandb.project,
            run_name=cfg.tracking.wandb.run_name or cfg.recipe_name,
            config=asdict(cfg),
            wandb_mode=cfg.tracking.wandb.mode,
            tags=list(cfg.tracking.wandb.tags),
            console=cfg.tracking.console,
            total_steps=cfg.trainer.total_steps,
        )
        self.actor = self.rollout = self.reference = self.simulator = None
        self.sample_rows: list[dict] = []  # completions to record for the current step
        self.placement = None  # role -> placement-group seats, once Ray is up
        self.weight_layout = None  # tensor layout of the actor->rollout broadcast (rollout.weight_sync=collective)
        res = cfg.resources
        # Colocated on GPUs, the rollout engine frees its memory while the actor trains.
        self.rollout_sleeps = res.placement == "colocate" and res.rollout.num_gpus > 0 and cfg.rollout.engine == "vllm"

    # ----- set-up -------------------------------------------------------------------------------
    def _make_sampler(self):
        data, seed = self.cfg.data, self.cfg.trainer.seed
        if data.sampler == "uniform":
            return PromptSampler(self.train_samples, data.prompts_per_step, seed=seed, shuffle=data.shuffle)
        if data.sampler == "task_homogeneous":
            by_task: dict[str, list[Sample]] = {}
            for sample in self.train_samples:
                by_task.setdefault(sample.task, []).append(sample)
            return TaskHomogeneousSampler(
                by_task, data.prompts_per_step, seed=seed,
                task_weights=dict(data.task_weights) if data.task_weights else None, curriculum_key=data.curriculum_key,
            )
        raise ValueError(f"data.sampler={data.sampler!r}: expected 'uniform' or 'task_homogeneous'")

    def _within_context(self, samples: list[Sample], split: str) -> list[Sample]:
        """The samples whose prompt leaves room for a full response in the model's context; the rest are
        dropped and counted here rather than failing inside the rollout engine."""
        cfg = self.cfg
        limit = cfg.data.max_prompt_tokens
        context = context_length(self.base_model_path)
        if limit is None and context is not None:
            limit = context - max(cfg.rollout.max_new_tokens, cfg.rollout.eval_max_new_tokens)
        if limit is None or not samples:
            return samples
        lengths = [len(self.encode_prompt(s)) for s in samples]
        kept = [s for s, n in zip(samples, lengths) if n <= limit]
        if not kept:
            longest = max(range(len(samples)), key=lengths.__getitem__)
            raise ValueError(f"every {split} prompt is longer than {limit} tokens (e.g. sample {samples[longest].id!r}: "
                             f"{lengths[longest]}); raise data.max_prompt_tokens or the model's context ({context}), "
                             "or lower rollout.max_new_tokens")
        if len(kept) < len(samples):
            print(f"[data] {split}: dropped {len(samples) - len(kept)} of {len(samples)} prompts longer than {limit} "
                  f"tokens (context {context} minus the response budget; data.max_prompt_tokens)")
        return kept

    def _find_resume_checkpoint(self) -> Path | None:
        mode = self.cfg.trainer.resume
        found = latest_checkpoint(self.run_dir / "checkpoints")
        if mode == "never":
            if found is not None:
                raise FileExistsError(
                    f"{self.run_dir} already holds checkpoint {found.name}; use trainer.resume=auto to continue it "
                    "or trainer.output_dir=<new folder> for a fresh run"
                )
            return None
        if mode == "auto":
            return found
        path = Path(mode)
        if not (path / "meta.json").exists():
            raise FileNotFoundError(f"trainer.resume={mode!r}: no complete checkpoint there (meta.json missing)")
        return path

    def _prepare_model(self) -> str:
        model = self.cfg.model
        if model.path == "tiny":
            from trainer.tiny_model import build_tiny_model

            return str(build_tiny_model(model.tiny, self.run_dir / "tiny_model", seed=self.cfg.trainer.seed))
        if model.path == "tiny_vl":
            from trainer.tiny_model import build_tiny_vl_model

            return str(build_tiny_vl_model(model.tiny, model.tiny_vision, self.run_dir / "tiny_vl_model",
                                           seed=self.cfg.trainer.seed, image_pixels=model.tiny_vision.image_pixels))
        if model.path == "smollm2":
            from trainer.smollm2 import prepare_smollm2

            return str(prepare_smollm2())
        return resolve_model_path(model.path, model.revision, offline=model.offline)

    def _max_model_len(self) -> int:
        rollout = self.cfg.rollout
        longest_prompt = max(len(self.encode_prompt(s)) for s in self.train_samples + self.eval_samples)
        # Later turns of a dialogue carry the earlier turns and simulator replies in their prompt.
        extra_turns = (rollout.multiturn.turns - 1) * (rollout.max_new_tokens + rollout.multiturn.simulator_max_tokens + 8)
        return longest_prompt + max(rollout.max_new_tokens, rollout.eval_max_new_tokens) + max(0, extra_turns)

    def encode_prompt(self, sample: Sample) -> list[int]:
        """The prompt's token ids exactly as rollout sees them (chat template, image placeholders expanded)."""
        if sample.images:
            return self._image_prompt(sample)[0]
        return self.chat.ids(sample)

    def _image_prompt(self, sample: Sample) -> tuple[list[int], str]:
        """Token ids (image placeholders expanded) and chat text of a prompt with images; cached per sample."""
        key = id(sample)
        if key not in self._image_prompts:
            from trainer.vision import encode_with_images

            text = self.chat.text(sample, template_owner=self._vision_processor())
            ids, _ = encode_with_images(self._vision_processor(), text, sample.images, source=repr(sample.id))
            self._image_prompts[key] = (ids, text)
        return self._image_prompts[key]

    def _vision_processor(self):
        if self.processor is None:
            from trainer.vision import is_vision_model, load_processor

            if not is_vision_model(self.base_model_path):
                raise ValueError(f"the data has images but model.path={self.cfg.model.path!r} is a text-only model")
            model = self.cfg.model
            self.processor = load_processor(self.base_model_path, model.image_min_pixels, model.image_max_pixels)
        return self.processor

    def _media(self, sample: Sample):
        """The processed images of `sample` (None without images); re-read from disk, not kept in memory."""
        if not sample.images:
            return None
        from trainer.vision import encode_with_images

        text = self._image_prompt(sample)[1]  # the chat template is rendered once per sample
        return encode_with_images(self._vision_processor(), text, sample.images, source=repr(sample.id))[1]

    def start_workers(self, policy_path: str) -> None:
        cfg = self.cfg
        res = cfg.resources
        if self.use_ray:
            init_ray(cfg.ray.address, cfg.ray.num_cpus, self._cpus_for_all_roles())
        from trainer.workers.reference import ReferenceWorker
        from trainer.workers.rollout import RolloutWorker

        self.max_len = self._max_model_len()
        if self.actor is None:
            self.actor = self._actor_group(policy_path)
        self.rollout = WorkerGroup(
            "rollout", RolloutWorker, res.rollout, use_ray=self.use_ray, slots=self._slots("rollout"),
            env_vars={"VLLM_CPU_KVCACHE_SPACE": str(cfg.rollout.kv_cache_gib), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
            model_path=policy_path, tokenizer=self.tokenizer_path, engine=cfg.rollout.engine, dtype=cfg.model.dtype,
            seed=cfg.trainer.seed,
            threads=cfg.rollout.threads,
            **({"max_model_len": self.max_len, "kv_cache_gib": cfg.rollout.kv_cache_gib,
                "gpu_memory_utilization": cfg.rollout.gpu_memory_utilization,
                "max_num_seqs": cfg.rollout.max_num_seqs, "sleep_mode": self.rollout_sleeps,
                "tensor_parallel_size": cfg.rollout.tensor_parallel_size,
                "max_images_per_prompt": self.max_images_per_prompt,
                "image_min_pixels": cfg.model.image_min_pixels, "image_max_pixels": cfg.model.image_max_pixels}
               if cfg.rollout.engine == "vllm" else {}),
        )
        if cfg.rollout.weight_sync == "collective":
            self._open_weight_sync()
        if cfg.rollout.multiturn.turns > 1:
            self.simulator = PatientSimulator(cfg.rollout.multiturn, policy_path)
        if cfg.algorithm.kl_coef > 0:
            self.reference = WorkerGroup(
                "reference", ReferenceWorker, res.reference, use_ray=self.use_ray, slots=self._slots("reference"),
                model_path=policy_path, dtype=cfg.model.dtype,
                micro_batch_size=cfg.actor.micro_batch_size, threads=cfg.actor.threads,
                max_tokens_per_micro_batch=cfg.actor.max_tokens_per_micro_batch,
                logits_chunk_size=cfg.actor.logits_chunk_size,
            )

    def _slots(self, role: str) -> list | None:
        """This role's placement-group seats (resources.placement), planned once for all roles."""
        if not self.use_ray:
            return None
        if self.placement is None:
            from trainer.workers.placement import plan_placement

            roles = ["actor", "rollout"] + (["reference"] if self.cfg.algorithm.kl_coef > 0 else [])
            self.placement = plan_placement(self.cfg.resources, roles)
        return self.placement.get(role)

    def _cpus_for_all_roles(self) -> float:
        """Logical CPUs a local Ray needs so that every role can be placed at once, in any stage
        of this process (a DPO stage adds a reference even when kl_coef is 0)."""
        res = self.cfg.resources
        return sum(r.num_cpus * r.count for r in (res.actor, res.rollout, res.reference))

    def _actor_group(self, model_path: str) -> WorkerGroup:
        from trainer.workers.actor import ActorWorker

        cfg = self.cfg
        group = WorkerGroup(
            "actor", ActorWorker, cfg.resources.actor, use_ray=self.use_ray, ranked=True, slots=self._slots("actor"),
            model_path=model_path, actor=asdict(cfg.actor), algorithm=asdict(cfg.algorithm),
            dtype=cfg.model.dtype, seed=cfg.trainer.seed, max_len=cfg.rollout.max_new_tokens,
        )
        if cfg.actor.strategy != "torch":
            # Sharded strategies: rank 0 names the rendezvous, then all ranks join at once.
            host, port = group.call_one(0, "rendezvous_address")
            group.call("init_distributed", host, port)
        return group

    # ----- stages -------------------------------------------------------------------------------
    def cold_start_sft(self) -> str:
        """Run SFT once and cache its model in the run directory; later runs reuse it."""
        cfg = self.cfg.sft
        out_dir = self.run_dir / "sft_model"
        if cfg.steps <= 0:
            return self.base_model_path
        if (out_dir / "stage_done.json").exists():
            self.tracker.print(f"[sft] reusing {out_dir}")
            return str(out_dir)
        if self.use_ray:
            init_ray(self.cfg.ray.address, self.cfg.ray.num_cpus, self._cpus_for_all_roles())
        self.actor = self._actor_group(self.base_model_path)
        usable = [s for s in self.train_samples if "sft_target" in s.metadata]
        if not usable:
            raise ValueError("sft.steps > 0 but no training sample has metadata.sft_target")
        prompts = [self.encode_prompt(s) for s in usable]
        media = [self._media(s) for s in usable] if any(s.images for s in usable) else None
        eos = self.tokenizer.eos_token_id
        targets = [self.tokenizer(self.chat.sft_target(s, s.metadata["sft_target"]), add_special_tokens=False)["input_ids"]
                   + [eos] for s in usable]
        stages = curriculum_stages(usable, cfg.curriculum_key) if cfg.curriculum_key else None
        start = time.time()
        curve = self.actor.call(
            "sft", prompts, targets, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
            weight_decay=cfg.weight_decay, pad_id=self.pad_id, media=media, stages=stages,
            stage_steps=cfg.stage_steps, loss_agg=cfg.loss_agg,
        )[0]
        self.tracker.print(
            f"[sft] {cfg.steps} steps in {time.time() - start:.0f}s, loss {curve[0][1]:.3f} -> {curve[-1][1]:.3f}"
        )
        self.save_model(out_dir)
        (out_dir / "stage_done.json").write_text(json.dumps({"steps": cfg.steps, "loss_curve": curve}))
        # RL starts a fresh actor from the saved model (fresh optimiser and schedule), the same
        # whether SFT ran just now or is reused from an earlier run.
        self.actor.shutdown()
        self.actor = None
        return str(out_dir)

    # ----- one RL step --------------------------------------------------------------------------
    def generate(self, samples: list[Sample], spec: SamplingSpec) -> list[Completion]:
        return self.generate_ids([self.encode_prompt(s) for s in samples], spec, media=self.media_of(samples))

    def media_of(self, samples: list[Sample]) -> list | None:
        return [self._media(s) for s in samples] if any(s.images for s in samples) else None

    def _completion_media(self, rollouts: Rollouts, rows: list[int]) -> list | None:
        """Each completion's prompt images, processed once per prompt rather than once per completion."""
        per_prompt = self.media_of(rollouts.samples)
        return None if per_prompt is None else [per_prompt[rollouts.group[i]] for i in rows]

    def generate_ids(self, prompts: list[list[int]], spec: SamplingSpec, first_index: int = 0,
                      media: list | None = None) -> list[Completion]:
        """n completions per prompt, in prompt order; `first_index` keeps seeds distinct across calls of a step.
        `media[i]` carries prompt i's images."""
        if media is None:
            indexed = [(first_index + i, p) for i, p in enumerate(prompts)]
        else:
            indexed = [(first_index + i, p, m) for i, (p, m) in enumerate(zip(prompts, media))]
        completions = self.rollout.scatter("generate", indexed, spec)
        expected = [first_index + i for i in range(len(prompts)) for _ in range(spec.n)]
        if [c.prompt_index for c in completions] != expected:
            raise RuntimeError("rollout returned completions out of prompt order")
        return completions

    def response_text(self, sample: Sample, completion: Completion, mode_prefix: str = "") -> str:
        """The response as rewards read it: what the chat template and a BPO mode opened, then the generated text."""
        return self.chat.prefix_for(sample) + mode_prefix + self.chat.decode(completion.token_ids)

    def score(self, texts: list[str], samples: list[Sample]):
        """Rewards for each text, and whether each counts as correct (the accuracy reward reaches 1)."""
        scored = self.rewards.score(texts, samples)
        values = accuracy_scores(scored, self.cfg.reward.accuracy_reward)
        correct = [v >= self.cfg.reward.correct_at.get(s.task, 1.0) for v, s in zip(values, samples)]
        return scored, correct

    def rollout_round(self, samples: list[Sample], seed: int) -> Rollouts:
        """Generate and score n completions per prompt (per mode, for BPO), grouped by prompt."""
        cfg = self.cfg
        spec = SamplingSpec(
            n=cfg.rollout.n, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k,
            max_new_tokens=cfg.rollout.max_new_tokens, stop_token_ids=self.chat.stop_ids, seed=seed,
        )
        if self.simulator is not None:
            return self._score_rollouts(multiturn_rollouts(self, samples, spec))
        prompts = [self.encode_prompt(s) for s in samples]
        media = self.media_of(samples)
        out = Rollouts(samples=samples)
        clock = time.time()
        for k, mode in enumerate(cfg.rollout.modes or [""]):
            prefix = cfg.rollout.mode_prefixes[mode] if mode else ""
            prefix_ids = self.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
            for c in self.generate_ids([p + prefix_ids for p in prompts], spec, first_index=k * len(samples),
                                        media=media):
                group = c.prompt_index - k * len(samples)
                out.completions.append(c)
                out.prompt_ids.append(prompts[group] + prefix_ids)
                out.texts.append(self.response_text(samples[group], c, prefix))
                out.group.append(group)
                out.modes.append(mode)
        out.seconds["generate"] = time.time() - clock
        return self._score_rollouts(out)

    def _score_rollouts(self, out: Rollouts) -> Rollouts:
        clock = time.time()
        owners = [out.samples[g] for g in out.group]
        out.scored, out.correct = self.score(out.texts, owners)
        if self.cfg.reward.group_transforms:
            out.scored = self.rewards.apply_group_transforms(
                out.scored, out.group, owners, [len(c.token_ids) for c in out.completions]
            )
        out.seconds["reward"] = time.time() - clock
        return out

    def collect(self, step: int) -> tuple[Rollouts, dict[str, float]]:
        """One step's rollouts; with dynamic sampling, rounds continue until enough groups have reward variance."""
        cfg = self.cfg
        seed = cfg.trainer.seed * 1_000_003 + step * 10_007
        if not cfg.algorithm.dynamic_sampling:
            return self.rollout_round(self.sampler.next_batch(), seed), {}
        kept: list[Rollouts] = []
        spent = {"generate": 0.0, "reward": 0.0}
        groups = dropped = rounds = 0
        while groups < cfg.data.prompts_per_step and rounds < cfg.algorithm.dynamic_sampling_max_rounds:
            batch = self.rollout_round(self.sampler.next_batch(), seed + rounds * 7_919)
            rounds += 1
            for key, seconds in batch.seconds.items():
                spent[key] += seconds
            take = batch.varied_groups()[: cfg.data.prompts_per_step - groups]
            dropped += len(batch.samples) - len(take)
            if take:
                kept.append(batch.select_groups(take))
                groups += len(take)
        merged = Rollouts.concat(kept) if kept else batch.select_groups([])
        merged.seconds = spent  # dropped rounds cost time too
        return merged, {"batch/sampling_rounds": float(rounds), "batch/dropped_groups": float(dropped)}

    def step(self, step: int) -> dict[str, float]:
        cfg, timings = self.cfg, {}
        self.sample_rows = []
        rollouts, metrics = self.collect(step)
        timings.update(rollouts.seconds)
        if not rollouts.completions:
            metrics["batch/kept_completions"] = 0.0
            metrics.update({f"time/{k}": v for k, v in timings.items()})
            return metrics

        rewards = torch.tensor(rollouts.scored.scores, dtype=torch.float32)
        group_index = torch.tensor(rollouts.group)
        advantages = get_advantage(cfg.algorithm.advantage)(
            rewards, group_index, **dict(cfg.algorithm.advantage_params)
        )
        metrics.update(self._rollout_metrics(rollouts, rewards))
        every = cfg.tracking.samples_every
        self.sample_rows = rollouts.table_rows(cfg.tracking.samples_per_log) if every and (step + 1) % every == 0 else []
        if self.weighter is not None:
            advantages, weight_metrics = self._weight_advantages(
                advantages, rollouts.samples, rollouts.group, rollouts.correct
            )
            metrics.update(weight_metrics)

        keep = list(range(len(rollouts.completions)))
        if cfg.algorithm.filter_zero_variance:
            varied = set(rollouts.varied_groups())
            keep = [i for i, g in enumerate(rollouts.group) if g in varied]
        metrics["batch/kept_completions"] = float(len(keep))
        if keep:
            completions = rollouts.completions
            batch = TrainBatch.from_sequences(
                [rollouts.prompt_ids[i] for i in keep], [completions[i].token_ids for i in keep], self.pad_id,
                [completions[i].loss_mask for i in keep],
                media=self._completion_media(rollouts, keep),
            )
            width = batch.response_mask.shape[1]
            batch.advantages = advantages[keep]
            batch.rollout_logprobs = TrainBatch.per_token([completions[i].logprobs for i in keep], width)
            temperature = cfg.rollout.temperature

            if self.rollout_sleeps:
                self.rollout.call("sleep")
            clock = time.time()
            batch.old_logprobs = self.actor.call("log_probs", batch, temperature)[0]
            timings["old_logprobs"] = time.time() - clock
            mask = batch.response_mask
            metrics["logp_mismatch"] = float(((batch.rollout_logprobs - batch.old_logprobs).abs() * mask).sum() / mask.sum())
            if self.reference is not None:
                clock = time.time()
                batch.ref_logprobs = self.reference.call("log_probs", batch, temperature)[0]
                timings["reference"] = time.time() - clock

            clock = time.time()
            update_metrics = self.actor.call("update", batch, temperature)[0]
            timings["update"] = time.time() - clock
            metrics.update({f"actor/{k}": v for k, v in update_metrics.items()})
            metrics["throughput/update_tokens_per_s"] = float(batch.attention_mask.sum()) / timings["update"]

            clock = time.time()
            self.sync_weights()
            timings["sync"] = time.time() - clock
        metrics["throughput/rollout_tokens_per_s"] = metrics["response_len/sum"] / max(timings["generate"], 1e-9)
        metrics.update({f"time/{k}": v for k, v in timings.items()})
        metrics["time/step"] = sum(timings.values())
        return metrics

    def _weight_advantages(self, advantages, samples, prompt_of, correct):
        """Scale advantages by dynamic task weights (reward.weighting), updating the running statistics."""
        tasks = [samples[i].task for i in prompt_of]
        self.weighter.observe(tasks, correct, prompt_of)
        if self.cfg.reward.weighting.scope == "sample":
            weights = self.weighter.sample_weights(prompt_of, correct)
        else:
            by_task = self.weighter.task_weights()
            weights = [by_task.get(t, 1.0) for t in tasks]
        if isinstance(self.sampler, TaskHomogeneousSampler) and self.cfg.reward.weighting.scope == "task":
            # M2-Reasoning: the running task weights also decide which task the next batches come from.
            known = self.weighter.task_weights()
            self.sampler.set_task_weights({t: known.get(t, 1.0) or 1e-3 for t in self.sampler.task_weights})
        metrics = {"weighting/mean": float(np.mean(weights))}
        metrics.update({f"weighting/task/{t}": w for t, w in self.weighter.task_weights().items()})
        return advantages * torch.tensor(weights, dtype=advantages.dtype), metrics

    def _rollout_metrics(self, rollouts: Rollouts, rewards: torch.Tensor) -> dict[str, float]:
        completions, correct, scored = rollouts.completions, rollouts.correct, rollouts.scored
        lengths = torch.tensor([len(c.token_ids) for c in completions], dtype=torch.float32)
        metrics = {
            "reward/mean": float(rewards.mean()),
            "reward/std": float(rewards.std(unbiased=False)),
            "acc/mean": float(np.mean(correct)),
            "response_len/mean": float(lengths.mean()),
            "response_len/max": float(lengths.max()),
            "response_len/sum": float(lengths.sum()),
            "response/truncated_frac": float(np.mean([not c.finished for c in completions])),
        }
        groups = len(set(rollouts.group))
        metrics["batch/zero_variance_group_frac"] = 1.0 - len(rollouts.varied_groups()) / groups
        tasks = [rollouts.samples[g].task for g in rollouts.group]
        for task in sorted(set(tasks)):
            rows = [i for i, t in enumerate(tasks) if t == task]
            metrics[f"reward/{task}/mean"] = float(rewards[rows].mean())
            metrics[f"acc/{task}"] = float(np.mean([correct[i] for i in rows]))
        for name, values in scored.components.items():
            present = [v for v in values if v is not None]
            if present:
                metrics[f"reward_terms/{name}"] = float(np.mean(present))
        for key, count in scored.failures.items():
            metrics[f"reward_failures/{key}"] = float(count)
        if self.cfg.rollout.modes:
            metrics.update(mode_metrics(rewards, lengths, rollouts.modes))
        return metrics

    def _open_weight_sync(self) -> None:
        """Actor rank 0 and the rollout engines join one broadcast group (rollout.weight_sync=collective)."""
        host, port = self.actor.call_one(0, "rendezvous_address")
        size = 1 + len(self.rollout)
        sender = self.actor.call_async("open_weight_sync", host, port, size)
        receivers = self.rollout.call_each_async("open_weight_sync", [(host, port, i + 1, size) for i in range(size - 1)])
        self.weight_layout = self.actor.wait(sender, "open_weight_sync")[0]
        self.rollout.wait(receivers, "open_weight_sync")

    def sync_weights(self) -> None:
        """Push the actor's weights into every rollout engine, in place (no restart, no disk)."""
        if self.rollout_sleeps:
            self.rollout.call("wake_up")
        if self.weight_layout is not None:
            sent = self.actor.call_async("broadcast_weights")
            received = self.rollout.call_async("receive_weights", self.weight_layout)
            self.actor.wait(sent, "broadcast_weights")
            self.rollout.wait(received, "receive_weights")
            return
        weights = self.actor.call_async("weights")[0]
        self.rollout.call("load_weights", weights)

    # ----- evaluation ---------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Greedy accuracy on the held-out set, in `rollout.eval_thinking_mode` (R-4B's auto / long / short)."""
        spec = SamplingSpec(
            n=1, temperature=0.0, max_new_tokens=self.cfg.rollout.eval_max_new_tokens,
            stop_token_ids=self.chat.stop_ids, seed=0,
        )
        mode = {"auto": "", "long": "thinking", "short": "non_thinking"}[self.cfg.rollout.eval_thinking_mode]
        prefix = self.cfg.rollout.mode_prefixes[mode] if mode else ""
        prefix_ids = self.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        completions = self.generate_ids([self.encode_prompt(s) + prefix_ids for s in self.eval_samples], spec,
                                         media=self.media_of(self.eval_samples))
        texts = [self.response_text(s, c, prefix) for s, c in zip(self.eval_samples, completions)]
        scored, correct = self.score(texts, self.eval_samples)
        result = {"eval/acc": float(np.mean(correct)), "eval/correct": float(sum(correct)), "eval/total": float(len(correct)),
                  # How often the answer is in a closed box at all: a pretrained model often answers unboxed.
                  "eval/boxed_rate": float(np.mean([final_boxed(t)[0] is not None for t in texts]))}
        if self.cfg.rollout.modes and not mode:
            # In auto mode the policy chooses: how often does it think?
            result["eval/auto_think_share"] = auto_think_share(texts)
        tasks = [s.task for s in self.eval_samples]
        if len(set(tasks)) > 1:
            for task in sorted(set(tasks)):
                result[f"eval/acc/{task}"] = float(np.mean([c for c, t in zip(correct, tasks) if t == task]))
                # The mean score too: for graded rewards (IoU, numeric closeness) it says more than a threshold.
                result[f"eval/reward/{task}"] = float(np.mean([r for r, t in zip(scored.scores, tasks) if t == task]))
            # Unweighted over tasks, so a small task counts as much as a large one.
            result["eval/acc_task_mean"] = float(np.mean([result[f"eval/acc/{task}"] for task in set(tasks)]))
        return result

    # ----- checkpoints --------------------------------------------------------------------------
    def save(self, step: int, summary: dict) -> None:
        actor_states = self.actor.call("checkpoint_state")
        state = {
            "actor": actor_states[0],
            "actor_ranks": actor_states[1:],
            "sampler": self.sampler.state_dict(),
            "rng": capture_rng_state(),
            "summary": summary,
            "weighter": self.weighter.state_dict() if self.weighter is not None else None,
        }
        save_checkpoint(self.run_dir / "checkpoints", step, state, keep_last=self.cfg.trainer.keep_last)

    def restore(self, path: Path) -> tuple[int, dict]:
        state = load_checkpoint(path)
        self.actor.call("load_checkpoint_state", state["actor"], state.get("actor_ranks"))
        self.sampler.load_state_dict(state["sampler"])
        restore_rng_state(state["rng"])
        if self.weighter is not None and state.get("weighter"):
            self.weighter.load_state_dict(state["weighter"])
        self.sync_weights()
        return int(state["step"]), state["summary"]

    # ----- the run ------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, name = self.cfg, self.cfg.recipe_name
        # When SFT ran here, its actor carries straight into RL.
        policy_path = self.cold_start_sft()
        self.start_workers(policy_path)
        start_step, summary = 0, {}
        if self.resume_from is not None:
            start_step, summary = self.restore(self.resume_from)
            self.tracker.print(f"[{name}] resumed from {self.resume_from} at step {start_step}")
        if "eval_before" not in summary:
            summary["eval_before"] = self.evaluate()
            self.tracker.log(0, summary["eval_before"])
        before = summary["eval_before"]
        self.tracker.print(
            f"[{name}] held-out accuracy before RL: {100 * before['eval/acc']:.1f}% "
            f"({int(before['eval/correct'])}/{int(before['eval/total'])}), "
            f"boxed answers {100 * before.get('eval/boxed_rate', float('nan')):.1f}%"
        )
        recent_rewards: list[float] = []
        for step in range(start_step, cfg.trainer.total_steps):
            metrics = self.step(step)
            recent_rewards = (recent_rewards + [metrics.get("reward/mean", float("nan"))])[-10:]
            done = step + 1
            if cfg.trainer.eval_every and done % cfg.trainer.eval_every == 0 and done < cfg.trainer.total_steps:
                metrics.update(self.evaluate())
            self.tracker.log(done, metrics)
            self.tracker.log_samples(done, self.sample_rows)
            if done == cfg.trainer.total_steps or (cfg.trainer.save_every and done % cfg.trainer.save_every == 0):
                self.save(done, summary)
        if "eval_after" not in summary or summary.get("eval_after_step") != cfg.trainer.total_steps:
            summary["eval_after"] = self.evaluate()
            summary["eval_after_step"] = cfg.trainer.total_steps
            self.tracker.log(cfg.trainer.total_steps, summary["eval_after"])
        after = summary["eval_after"]
        gain = 100 * (after["eval/acc"] - before["eval/acc"])
        self.tracker.print(
            f"[{name}] held-out accuracy after RL:  {100 * after['eval/acc']:.1f}% "
            f"({int(after['eval/correct'])}/{int(after['eval/total'])}), {gain:+.1f} points, "
            f"boxed answers {100 * after['eval/boxed_rate']:.1f}%"
        )
        for line in per_task_lines(before, after):
            self.tracker.print(f"[{name}] {line}")
        if recent_rewards:
            summary["reward_last10"] = float(np.mean(recent_rewards))
        summary["steps"] = cfg.trainer.total_steps
        self.save_model(self.run_dir / "final_model")
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def save_model(self, out_dir: Path) -> Path:
        """The actor's current weights and the tokenizer as a Hugging Face folder (the stage's output);
        for a vision model its processor, which writes the tokenizer too, so the next stage loads it."""
        from trainer.vision import is_vision_model

        out_dir.mkdir(parents=True, exist_ok=True)
        self.actor.call("save_pretrained", str(out_dir))
        if is_vision_model(self.base_model_path):
            self._vision_processor().save_pretrained(out_dir)
        else:
            self.tokenizer.save_pretrained(out_dir)
        return out_dir

    def close(self) -> None:
        if self.simulator is not None:
            self.simulator.close()
        self.rewards.close()
        self.tracker.finish()
        for group in (self.rollout, self.reference, self.actor):
            if group is not None:
                group.shutdown()
        if self.placement:
            from trainer.workers.placement import remove_placement

            remove_placement(self.placement)
            self.placement = None


def per_task_lines(before: dict, after: dict) -> list[str]:
    """A held-out table, one row per task: accuracy and mean reward before -> after RL."""
    tasks = sorted(key.split("/", 2)[2] for key in after if key.startswith("eval/acc/"))
    if not tasks:
        return []
    width = max(len(task) for task in [*tasks, "mean of tasks"])
    lines = [f"{'task':<{width}}  accuracy before -> after   mean reward before -> after"]
    for task in tasks:
        acc, reward = f"eval/acc/{task}", f"eval/reward/{task}"
        lines.append(
            f"{task:<{width}}  {100 * before.get(acc, float('nan')):5.1f}% -> {100 * after[acc]:5.1f}%"
            f"        {before.get(reward, float('nan')):.3f} -> {after[reward]:.3f}"
        )
    mean = "eval/acc_task_mean"
    lines.append(f"{'mean of tasks':<{width}}  {100 * before.get(mean, float('nan')):5.1f}% -> {100 * after[mean]:5.1f}%")
    return lines


def train(cfg: Config) -> dict:
    trainer = Trainer(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.close()
