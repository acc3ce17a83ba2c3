"""Rollout collection: prompts in, scored `Rollouts` out. Generate -> decode -> rate is written once
(`generate_rated`, which rates each part of the engines' output while they decode the rest), and every
mode of collecting builds on it: one round of n completions per prompt (per thinking mode for BPO, or
multi-turn dialogues), dynamic sampling over rounds (`collect`), greedy evaluation, DPO pairs and the
data filter."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from queue import SimpleQueue

from data.schema import Sample
from rewards.compose import RewardBatch
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

    def sample(self, samples: list[Sample], spec: SamplingSpec, mode: str = "", first_index: int = 0) -> Rollouts:
        """spec.n scored completions per sample (no group transforms: evaluation, DPO pairs, the data filter)."""
        rollouts, rated = self.generate_rated(samples, spec, mode, first_index)
        return self.scorer.score(rollouts, group_transforms=False, rated=rated)

    def generate_rated(self, samples: list[Sample], spec: SamplingSpec, mode: str = "",
                       first_index: int = 0) -> tuple[Rollouts, RewardBatch]:
        """spec.n completions per sample, generated with the prompts' images and decoded, grouped by prompt,
        with their rewards before group transforms. The engines hand completions out as they finish: a
        second thread receives them while this one rates them, so only the last ones wait after
        generation. (Rewards stay on the calling thread: in-process rewards time out by SIGALRM, which
        only the main thread gets.) `mode` forces a thinking-mode prefix (BPO); `first_index` keeps seeds
        distinct across calls."""
        clock = time.time()
        prefix = self.cfg.rollout.mode_prefixes[mode] if mode else ""
        prefix_ids = self.prompts.text_ids(prefix)
        prompt_ids = [self.prompts.ids(s) + prefix_ids for s in samples]
        media = self.prompts.media_of(samples)
        parts, stop, ended_at = SimpleQueue(), threading.Event(), []

        def receive() -> None:
            try:
                with closing(self.workers.generate_stream(prompt_ids, spec, first_index, media=media)) as stream:
                    for part in stream:
                        parts.put(part)
                        if stop.is_set():  # rating failed: stop the engines too
                            return
            finally:
                ended_at.append(time.time())
                parts.put(None)

        items, batches, ended = [], [], False
        with ThreadPoolExecutor(1, thread_name_prefix="generate") as receiver:
            receiving = receiver.submit(receive)
            try:
                while not ended:
                    # Everything that came while the last call ran, so a judge reward's batch fills its concurrency.
                    ready = [parts.get()]
                    while not parts.empty():
                        ready.append(parts.get())
                    ended = ready[-1] is None
                    new = []
                    for c in (c for part in ready if part is not None for c in part):
                        group = c.prompt_index - first_index
                        text = self.prompts.response_text(samples[group], c, prefix)
                        new.append(Rollout(group=group, prompt_ids=prompt_ids[group], completion=c, text=text,
                                           mode=mode))
                    items += new
                    if new:
                        batches.append(self.scorer.rate([r.text for r in new], [samples[r.group] for r in new]))
            finally:
                stop.set()
            receiving.result()  # a generation error
        order = sorted(range(len(items)), key=lambda i: (items[i].group, items[i].completion.sample))
        out = Rollouts(samples=samples, media=media, items=[items[i] for i in order])
        out.seconds["generate"] = ended_at[0] - clock
        out.seconds["reward"] = time.time() - ended_at[0]  # what rating added after the last part
        return out, RewardBatch.concat(batches).permuted(order)

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
        parts = [self.generate_rated(samples, spec, mode, first_index=k * len(samples)) for k, mode in enumerate(modes)]
        out = parts[0][0]
        for part, _ in parts[1:]:  # every mode answers the same prompts: one group per prompt
            out.items += part.items
            for key, seconds in part.seconds.items():
                out.seconds[key] += seconds
        return self.scorer.score(out, rated=RewardBatch.concat([rated for _, rated in parts]))

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
