"""The rollout worker: generation with vLLM or the HF engine (rollout.engine), and in-place weight updates."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Iterator

import torch

from trainer.gc_pause import gc_paused
from trainer.rollout import ENGINES
from trainer.rollout.sampling import Completion, SamplingSpec


class RolloutWorker:
    @gc_paused()  # imports and the model build: trainer/gc_pause.py
    def __init__(self, model_path: str, *, engine: str, dtype: str, seed: int, threads: int,
                 tokenizer: str | None = None, **engine_kwargs):
        """`tokenizer`: the trainer's tokenizer folder (model.tokenizer), when it is not the model's."""
        torch.set_num_threads(threads)
        self.engine = ENGINES.get(engine)(model_path, dtype=dtype, seed=seed, tokenizer=tokenizer, **engine_kwargs)

    def generate(self, indexed_prompts: list[tuple], spec: SamplingSpec) -> list[Completion]:
        """(index, token ids[, media]) items: the index is the prompt's place in the whole step, so seeds
        and results do not depend on sharding; media (trainer.vision.Media) carries its images."""
        prompts, indices, media = self._unpack(indexed_prompts)
        if media is None:  # engines without images need not take the argument
            return self.engine.generate(prompts, spec, indices)
        return self.engine.generate(prompts, spec, indices, media=media)

    def generate_stream(self, indexed_prompts: list[tuple], spec: SamplingSpec) -> Iterator[list[Completion]]:
        """`generate` in parts as completions finish, from engines that stream (vLLM); others hand back one
        part, each prompt's completions numbered in order (Completion.sample)."""
        if not hasattr(self.engine, "generate_stream"):
            numbered = Counter()
            completions = []
            for c in self.generate(indexed_prompts, spec):
                completions.append(replace(c, sample=numbered[c.prompt_index]))
                numbered[c.prompt_index] += 1
            yield completions
            return
        prompts, indices, media = self._unpack(indexed_prompts)
        for part in self.engine.generate_stream(prompts, spec, indices, media):
            yield part
            if _cancelled():  # the controller stopped reading (WorkerGroup.stream): free the engine
                return

    @staticmethod
    def _unpack(indexed_prompts: list[tuple]) -> tuple[list, list, list | None]:
        media = [item[2] if len(item) > 2 else None for item in indexed_prompts]
        return ([item[1] for item in indexed_prompts], [item[0] for item in indexed_prompts],
                media if any(m is not None for m in media) else None)

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.engine.load_weights(state_dict)

    def open_weight_sync(self, host: str, port: int, rank: int, world_size: int, layout: list, bucket_bytes: int,
                         shared_file: str | None = None) -> None:
        """Join the actor->rollout sync group as a receiver (rollout.weight_sync collective or shared_memory)."""
        from trainer.rollout.weight_sync import BucketChannel, SyncGroup, plan_buckets

        group = SyncGroup(host, port, rank=rank, world_size=world_size)
        self.weight_channel = BucketChannel(group, plan_buckets(layout, bucket_bytes), shared_file)

    def receive_weights(self) -> None:
        """Load the actor's weights bucket by bucket, in place, as they arrive."""
        for bucket in self.weight_channel.receive():
            self.engine.load_weights(bucket)

    def host(self) -> str:
        import socket

        return socket.gethostname()

    def sleep(self) -> None:
        """Free the engine's GPU memory while the actor trains (colocated placement)."""
        self.engine.sleep()

    def wake_up(self) -> None:
        self.engine.wake_up()

    def weights(self) -> dict[str, torch.Tensor]:
        return self.engine.weights()

    def close(self) -> None:
        if hasattr(self.engine, "close"):
            self.engine.close()


def _cancelled() -> bool:
    """Whether Ray cancelled the task this worker runs (never in-process, in the controller)."""
    import ray

    if not ray.is_initialized():  # (get_runtime_context would start Ray)
        return False
    try:
        return ray.get_runtime_context().is_canceled()
    except RuntimeError:  # the controller, with its engine in-process
        return False
