"""The single controller: one function per RL step, driving rollout, reference and actor workers.

    collect (sample prompts -> rollout.generate -> rewards) -> advantages -> old/reference log-probs
            -> actor.update -> weight sync (actor -> rollout) -> metrics, checkpoint

The parts a step calls live in modules of their own: prompt rendering (trainer.prompts), the workers
(trainer.cluster), rollout collection and scoring (trainer.collect, trainer.scoring), held-out
evaluation (trainer.evaluate) and the stages around RL (trainer.stages). docs/architecture.md maps them.
"""

from __future__ import annotations

import json
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from data.sampler import SAMPLERS, TaskHomogeneousSampler
from trainer.algorithms import get_advantage
from trainer.algorithms.bpo import mode_metrics
from trainer.batch import TrainBatch
from trainer.checkpoint import (actor_shards, capture_rng_state, load_checkpoint, restore_rng_state, resume_checkpoint,
                                save_checkpoint)
from trainer.cluster import WorkerCluster
from trainer.collect import RolloutCollector
from trainer.config import Config, validate
from trainer.recipe_config import config_yaml
from trainer.evaluate import band_check, evaluate, per_task_lines
from trainer.mismatch import MismatchBudget, likely_causes
from trainer.rollouts import Rollouts, term_means
from trainer.scoring import Scorer, failure_lines
from trainer.setup import prepare_run
from trainer.stages.sft import run_sft
from trainer.tracking import Tracker


class Trainer:
    def __init__(self, cfg: Config):
        validate(cfg)
        self.cfg = cfg
        self.run_dir = Path(cfg.trainer.output_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.resume_from = resume_checkpoint(self.run_dir / "checkpoints", cfg.trainer.resume)
        seed = cfg.trainer.seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

        policy, self.train_samples, self.eval_samples, max_images = prepare_run(cfg, self.run_dir)
        self.base_model_path, self.tokenizer_path = policy.model_path, policy.tokenizer_path
        self.prompts, self.pad_id = policy.prompts, policy.pad_id
        (self.run_dir / "config.yaml").write_text(config_yaml(cfg))  # as resolved (e.g. the engine auto chose)
        sampler, data = SAMPLERS.get(cfg.data.sampler), cfg.data
        options = {"seed": seed, "shuffle": data.shuffle, "task_weights": data.task_weights,
                   "curriculum_key": data.curriculum_key}
        self.sampler = sampler(self.train_samples, data.prompts_per_step,
                               **{k: v for k, v in options.items() if k in sampler.params})
        self.scorer = Scorer(cfg.reward)
        self.mismatch = MismatchBudget(cfg.algorithm.mismatch_budget, cfg.algorithm.mismatch_action, likely_causes(cfg))
        self.weighter = None
        if cfg.reward.weighting.rule:
            from trainer.algorithms.weighting import TaskWeighter

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
        if policy.configured_engine != cfg.rollout.engine:
            self.tracker.print(f"[{cfg.recipe_name}] rollout.engine={policy.configured_engine} -> {cfg.rollout.engine}")
        self.workers = WorkerCluster(cfg, self.tokenizer_path, max_images)
        self.collector = RolloutCollector(cfg, self.prompts, self.workers, self.scorer, self.sampler)
        self.sample_rows: list[dict] = []  # completions to record for the current step
        # rollout.async_steps=1: the next step's rollouts are collected on this thread while the actor trains.
        self.ahead = ThreadPoolExecutor(1, thread_name_prefix="rollouts-ahead") if cfg.rollout.async_steps else None
        self.pending = None  # (future, version) of the collection under way
        self.next_rollouts = None  # (rollouts, metrics, version) collected during the last step
        self.weight_version = 0  # weight syncs so far: a batch's staleness is the syncs since its generation

    def start_workers(self, policy_path: str) -> None:
        """Actor, rollout engines (sized for the longest prompt plus its response) and, with a KL term or
        multi-turn dialogues, the reference and the patient simulator."""
        rollout = self.cfg.rollout
        longest_prompt = max(len(self.prompts.ids(s)) for s in self.train_samples + self.eval_samples)
        # Later turns of a dialogue carry the earlier turns and simulator replies in their prompt.
        extra_turns = (rollout.multiturn.turns - 1) * (rollout.max_new_tokens + rollout.multiturn.simulator_max_tokens + 8)
        max_len = longest_prompt + max(rollout.max_new_tokens, rollout.eval_max_new_tokens) + max(0, extra_turns)
        self.workers.start(policy_path, max_len)
        self.collector.start(policy_path)

    # ----- one RL step --------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, float]:
        cfg, workers, timings, started = self.cfg, self.workers, {}, time.time()
        self.sample_rows = []
        rollouts, metrics, version = self.next_rollouts or (*self.collector.collect(step), self.weight_version)
        self.next_rollouts = None
        staleness = self.weight_version - version  # updates since the weights that generated the batch
        if staleness > cfg.rollout.async_steps:
            raise RuntimeError(f"step {step + 1}: rollouts {staleness} updates stale, over rollout.async_steps="
                               f"{cfg.rollout.async_steps}")
        if self.ahead is not None:
            metrics["async/staleness"] = float(staleness)
        timings.update(rollouts.seconds)
        for line in failure_lines(rollouts, cfg.reward.max_failure_frac):  # stops the run past the limit
            self.tracker.print(f"[reward] step {step + 1}: {line}")
        if not rollouts.items:
            self.collect_ahead(step)
            self.wait_ahead(timings)
            metrics["batch/kept_completions"] = 0.0
            metrics.update({f"time/{k}": v for k, v in timings.items()})
            return metrics

        rewards = torch.tensor([r.score for r in rollouts.items], dtype=torch.float32)
        group_index = torch.tensor([r.group for r in rollouts.items])
        advantages = get_advantage(cfg.algorithm.advantage)(  # [B] per completion or [B, T] per token
            rewards, group_index, rollouts.response_mask(), **dict(cfg.algorithm.advantage_params)
        )
        metrics.update(rollout_metrics(rollouts, rewards, bool(cfg.rollout.modes)))
        every = cfg.tracking.samples_every
        self.sample_rows = rollouts.table_rows(cfg.tracking.samples_per_log) if every and (step + 1) % every == 0 else []
        if self.weighter is not None:
            scope = cfg.reward.weighting.scope
            advantages, weight_metrics = self.weighter.weigh(
                advantages, [rollouts.samples[r.group].task for r in rollouts.items],
                [r.group for r in rollouts.items], [r.correct for r in rollouts.items], scope,
            )
            metrics.update(weight_metrics)
            if isinstance(self.sampler, TaskHomogeneousSampler) and scope == "task":
                # M2-Reasoning: the running task weights also decide which task the next batches come from.
                known = self.weighter.task_weights()
                self.sampler.set_task_weights({t: known.get(t, 1.0) or 1e-3 for t in self.sampler.task_weights})

        self.collect_ahead(step)  # after the task weights above: they decide the next batch's prompts
        keep = list(range(len(rollouts.items)))
        if cfg.algorithm.filter_zero_variance:
            varied = set(rollouts.varied_groups())
            keep = [i for i, r in enumerate(rollouts.items) if r.group in varied]
        keep, guard_metrics = finite_rows(rollouts, keep, advantages)
        metrics.update(guard_metrics)
        if guard_metrics["guard/skipped_update"]:
            self.tracker.print(f"[guard] step {step + 1}: {guard_metrics['guard/nonfinite_advantages']:.0f} non-finite "
                               f"advantages ({cfg.algorithm.advantage}); update skipped, weights unchanged")
        metrics["batch/kept_completions"] = float(len(keep))
        if keep:
            kept = [rollouts.items[i] for i in keep]
            media = rollouts.media  # the images generation saw, processed once per prompt
            batch = TrainBatch.from_sequences(
                [r.prompt_ids for r in kept], [r.completion.token_ids for r in kept], self.pad_id,
                [r.completion.loss_mask for r in kept],
                media=None if media is None else [media[r.group] for r in kept],
            )
            width = batch.response_mask.shape[1]
            batch.advantages = advantages[keep] if advantages.dim() == 1 else advantages[keep, :width]
            batch.rollout_logprobs = TrainBatch.per_token([r.completion.logprobs for r in kept], width)
            temperature = cfg.rollout.temperature

            workers.sleep_rollout()
            # Old log-probs (none when on-policy: the update's own forward, detached) and the reference's run
            # side by side on their own workers; time/reference is what the reference adds after the actor.
            clock = time.time()
            on_policy = ((one_optimizer_step(cfg, len(batch)) and cfg.algorithm.old_logprobs == "auto"
                          and staleness == 0) or cfg.algorithm.rollout_correction.mode == "bypass")
            old = None if on_policy else workers.actor.call_async("log_probs", batch, temperature)
            ref = None if workers.reference is None else workers.reference.call_async("log_probs", batch, temperature)
            if old is not None:
                batch.old_logprobs = workers.actor.wait(old, "log_probs")[0]
                timings["old_logprobs"] = time.time() - clock
                mask = batch.response_mask
                metrics["logp_mismatch"] = float(((batch.rollout_logprobs - batch.old_logprobs).abs() * mask).sum()
                                                 / mask.sum())
            if ref is not None:
                batch.ref_logprobs = workers.reference_log_probs(batch, temperature, pending=ref)
                timings["reference"] = time.time() - clock - timings.get("old_logprobs", 0.0)

            clock = time.time()
            correct = cfg.algorithm.rollout_correction.mode != "off" or self.mismatch.correcting or staleness > 0
            update_metrics = workers.actor.call("update", batch, temperature, correct)[0]
            timings["update"] = time.time() - clock
            if "logp_mismatch" in update_metrics:  # measured by the update when it made the old log-probs
                metrics["logp_mismatch"] = update_metrics.pop("logp_mismatch")
            said = self.mismatch.observe(metrics.get("logp_mismatch", float("nan")))  # raises past it with stop
            if said:
                self.tracker.print(f"[mismatch] step {step + 1}: {said}")
            skipped = update_metrics.pop("skipped")
            if skipped:
                metrics["guard/skipped_update"] = 1.0
                self.tracker.print(f"[guard] step {step + 1}: optimiser step skipped, weights unchanged: "
                                   + "; ".join(skipped))
            metrics.update({f"actor/{k}": v for k, v in update_metrics.items()})
            metrics["throughput/update_tokens_per_s"] = float(batch.attention_mask.sum()) / timings["update"]

            self.wait_ahead(timings)  # the engines finish the next batch before taking the new weights
            clock = time.time()
            workers.sync_weights()
            self.weight_version += 1
            timings["sync"] = time.time() - clock
        self.wait_ahead(timings)
        metrics["workers/restarts"] = float(workers.restarts)  # in the run so far
        metrics["throughput/rollout_tokens_per_s"] = metrics["response_len/sum"] / max(timings["generate"], 1e-9)
        metrics.update({f"time/{k}": v for k, v in timings.items()})
        # With async rollout, generation overlapped the previous step: the step's time is its wall time.
        metrics["time/step"] = time.time() - started if self.ahead is not None else sum(timings.values())
        return metrics

    def collect_ahead(self, step: int) -> None:
        """rollout.async_steps=1: start collecting the next step's rollouts with the engines' current weights."""
        if self.ahead is not None and step + 1 < self.cfg.trainer.total_steps:
            self.pending = (self.ahead.submit(self.collector.collect, step + 1), self.weight_version)

    def wait_ahead(self, timings: dict[str, float]) -> None:
        """The collection `collect_ahead` started, finished: kept for the next step (and its checkpoint)."""
        if self.pending is None:
            return
        clock = time.time()
        future, version = self.pending
        self.pending = None
        self.next_rollouts = (*future.result(), version)
        timings["wait_rollouts"] = time.time() - clock

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.collector, self.eval_samples)

    # ----- checkpoints --------------------------------------------------------------------------
    def save(self, step: int, summary: dict) -> None:
        state = {
            # Where the run's policy started: its config and tokenizer, for `python -m trainer export`.
            "policy": {"model": str(self.workers.policy_path), "tokenizer": str(self.tokenizer_path)},
            "sampler": self.sampler.state_dict(),
            "rng": capture_rng_state(),
            "summary": summary,
            "weighter": self.weighter.state_dict() if self.weighter is not None else None,
            "mismatch": self.mismatch.state_dict(),
            # async rollout: the next step's rollouts, generated with weights no longer in this checkpoint
            "rollouts_ahead": self.next_rollouts,
            "weight_version": self.weight_version,
        }
        # The actor's ranks write their own shards into the checkpoint's actor/ folder.
        save_checkpoint(self.run_dir / "checkpoints", step, state, keep_last=self.cfg.trainer.keep_last,
                        folders={"actor": lambda folder: self.workers.actor.call("save_checkpoint", str(folder))[0]})

    def restore(self, path: Path) -> tuple[int, dict]:
        state = load_checkpoint(path)
        self.workers.actor.call("load_checkpoint", str(actor_shards(path, state)), state["actor"])
        self.sampler.load_state_dict(state["sampler"])
        restore_rng_state(state["rng"])
        if self.weighter is not None and state.get("weighter"):
            self.weighter.load_state_dict(state["weighter"])
        if state.get("mismatch"):
            self.mismatch.load_state_dict(state["mismatch"])
        self.next_rollouts, self.weight_version = state.get("rollouts_ahead"), state.get("weight_version", 0)
        self.workers.sync_weights()
        return int(state["step"]), state["summary"]

    # ----- the run ------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, name = self.cfg, self.cfg.recipe_name
        # When SFT ran here, its actor carries straight into RL.
        policy_path = run_sft(self)
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
        skipped_in_a_row = 0
        for step in range(start_step, cfg.trainer.total_steps):
            metrics = self.step(step)
            skipped_in_a_row = skipped_in_a_row + 1 if metrics.get("guard/skipped_update") else 0
            if skipped_in_a_row >= cfg.trainer.max_skipped_steps:
                self.tracker.log(step + 1, metrics)
                raise FloatingPointError(
                    f"{skipped_in_a_row} RL steps in a row (to step {step + 1}) skipped their update for non-finite "
                    "values (the [guard] lines above say where); the weights are those of step "
                    f"{step + 1 - skipped_in_a_row}. Likely causes: actor.lr too high, a reward returning inf or "
                    "nan, or a low-precision model.dtype (trainer.max_skipped_steps)")
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
        inside, line = band_check(after["eval/acc"], cfg.trainer.expected_acc)
        if line:
            summary["in_expected_band"] = inside
            self.tracker.print(f"[{name}] {line}")
        if recent_rewards:
            summary["reward_last10"] = float(np.mean(recent_rewards))
        summary["steps"] = cfg.trainer.total_steps
        self.save_model(self.run_dir / "final_model")
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def save_model(self, out_dir: Path) -> Path:
        """The actor's weights with the tokenizer, or a vision model's processor, as a Hugging Face folder."""
        from trainer.vision import is_vision_model

        owner = self.prompts.processor() if is_vision_model(self.base_model_path) else self.prompts.tokenizer
        return self.workers.save_model(out_dir, owner)

    def close(self) -> None:
        if self.ahead is not None:
            self.ahead.shutdown(wait=True, cancel_futures=True)
        self.collector.close()
        self.scorer.close()
        self.tracker.finish()
        self.workers.close()


def one_optimizer_step(cfg: Config, batch_size: int) -> bool:
    """Whether the actor's update makes a single optimiser step on a batch of this size."""
    return cfg.actor.epochs == 1 and batch_size <= cfg.actor.mini_batch_size


def finite_rows(rollouts: Rollouts, keep: list[int], advantages: torch.Tensor) -> tuple[list[int], dict[str, float]]:
    """The numerical guard on a batch: completions with non-finite rollout log-probs are dropped, and any
    non-finite advantage among the rest skips the update (no rows kept)."""
    finite = [i for i in keep if all(math.isfinite(x) for x in rollouts.items[i].completion.logprobs)]
    bad = int((~torch.isfinite(advantages[finite])).sum()) if finite else 0
    metrics = {"guard/dropped_nonfinite_logprobs": float(len(keep) - len(finite)),
               "guard/nonfinite_advantages": float(bad), "guard/skipped_update": float(bad > 0)}
    return ([] if bad else finite), metrics


def rollout_metrics(rollouts: Rollouts, rewards: torch.Tensor, modes: bool) -> dict[str, float]:
    """Reward, accuracy, length and reward-term statistics of one step's rollouts (per task too)."""
    items = rollouts.items
    completions = [r.completion for r in items]
    correct = [r.correct for r in items]
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
    metrics["batch/zero_variance_group_frac"] = 1.0 - len(rollouts.varied_groups()) / len({r.group for r in items})
    tasks = [rollouts.samples[r.group].task for r in items]
    for task in sorted(set(tasks)):
        rows = [i for i, t in enumerate(tasks) if t == task]
        metrics[f"reward/{task}/mean"] = float(rewards[rows].mean())
        metrics[f"acc/{task}"] = float(np.mean([correct[i] for i in rows]))
    metrics.update(term_means(items))
    for key, count in rollouts.failures.items():
        metrics[f"reward_failures/{key}"] = float(count)
    if modes:
        metrics.update(mode_metrics(rewards, lengths, [r.mode for r in items]))
    return metrics


def train(cfg: Config) -> dict:
    trainer = Trainer(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.close()
