"""Rollout collection: prompts in, scored `Rollouts` out. Generate -> decode -> score is written once
(`sample`), and every mode of collecting builds on it: one round of n completions per prompt (per
thinking mode for BPO, or multi-turn dialogues), dynamic sampling over rounds (`collect`), greedy
evaluation, DPO pairs and the data filter."""

from __future__ import annotations

import time

from data.schema import Sample
from trainer.cluster import WorkerCluster
from trainer.config import Config
from trainer.prompts import PromptRenderer
from trainer.rollout.sampling import SamplingSpec
from trainer.rollouts import Rollout, Rollouts
from trainer.scoring import Scorer


class RolloutCollector:
    def __init__(self, cfg: Config, prompts: PromptRenderer, workers: WorkerCluster, scorer: Scorer, sampler):
        self.cfg, self.prompts, self.workers, self.scorer, self.sampler = cfg, prompts, workers, scorer, sampler
        self.simulator = None  # the patient simulator of multi-turn rollouts, from `start`

    def start(self, policy_path: str) -> None:
        if self.cfg.rollout.multiturn.turns > 1 and self.simulator is None:
            from trainer.multiturn import PatientSimulator

            self.simulator = PatientSimulator(self.cfg.rollout.multiturn, policy_path)

    def sample(self, samples: list[Sample], spec: SamplingSpec, mode: str = "", first_index: int = 0,
               score: bool = True) -> Rollouts:
        """spec.n completions per sample, generated with the prompts' images, decoded for rewards and
        scored. `mode` forces a thinking-mode prefix (BPO); `first_index` keeps seeds distinct across calls."""
        clock = time.time()
        prefix = self.cfg.rollout.mode_prefixes[mode] if mode else ""
        prefix_ids = self.prompts.text_ids(prefix)
        prompt_ids = [self.prompts.ids(s) + prefix_ids for s in samples]
        media = self.prompts.media_of(samples)
        completions = self.workers.generate(prompt_ids, spec, first_index, media=media)
        out = Rollouts(samples=samples, media=media)
        for c in completions:
            group = c.prompt_index - first_index
            text = self.prompts.response_text(samples[group], c, prefix)
            out.items.append(Rollout(group=group, prompt_ids=prompt_ids[group], completion=c, text=text, mode=mode))
        out.seconds["generate"] = time.time() - clock
        return self.scorer.score(out, group_transforms=False) if score else out

    def round(self, samples: list[Sample], seed: int) -> Rollouts:
        """n scored completions per prompt (per mode, for BPO; dialogues, for multi-turn), grouped by prompt."""
        rollout = self.cfg.rollout
        spec = SamplingSpec(
            n=rollout.n, temperature=rollout.temperature, top_p=rollout.top_p, top_k=rollout.top_k,
            max_new_tokens=rollout.max_new_tokens, stop_token_ids=self.prompts.chat.stop_ids, seed=seed,
        )
        if self.simulator is not None:
            from trainer.multiturn import dialogues

            return self.scorer.score(dialogues(self.prompts, self.workers, self.simulator, samples, spec))
        modes = rollout.modes or [""]
        parts = [self.sample(samples, spec, mode, first_index=k * len(samples), score=False)
                 for k, mode in enumerate(modes)]
        out = parts[0]
        for part in parts[1:]:  # every mode answers the same prompts: one group per prompt
            out.items += part.items
            out.seconds["generate"] += part.seconds["generate"]
        return self.scorer.score(out)

    def collect(self, step: int) -> tuple[Rollouts, dict[str, float]]:
        """One step's rollouts; with dynamic sampling, rounds continue until enough groups have reward variance."""
        cfg = self.cfg
        seed = cfg.trainer.seed * 1_000_003 + step * 10_007
        if not cfg.algorithm.dynamic_sampling:
            return self.round(self.sampler.next_batch(), seed), {}
        kept: list[Rollouts] = []
        spent = {"generate": 0.0, "reward": 0.0}
        groups = dropped = rounds = 0
        while groups < cfg.data.prompts_per_step and rounds < cfg.algorithm.dynamic_sampling_max_rounds:
            batch = self.round(self.sampler.next_batch(), seed + rounds * 7_919)
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

    def close(self) -> None:
        if self.simulator is not None:
            self.simulator.close()
            self.simulator = None
