"""Curriculum staging for cold-start SFT: which samples a staged curriculum may draw from at a step.

(The RL sampler that orders each task easy-to-hard is `data.sampler.TaskHomogeneousSampler`.)
"""

from __future__ import annotations

from collections.abc import Sequence

from data.schema import Sample


def staged_pool(stages: Sequence[int], step: int, stage_steps: int) -> list[int]:
    """Indices a staged curriculum may draw from at `step` (from 0): the samples whose stage is at most
    the (step // stage_steps)-th smallest distinct stage, so one more stage comes in every
    `stage_steps` steps and all are in once the largest has."""
    levels = sorted(set(stages))
    level = levels[min(len(levels) - 1, step // stage_steps)]
    return [i for i, stage in enumerate(stages) if stage <= level]


def curriculum_stages(samples: Sequence[Sample], key: str) -> list[int]:
    """Each sample's integer `metadata[key]`, for `staged_pool`; a missing or non-integer value is an error."""
    stages = []
    for sample in samples:
        value = sample.metadata.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"sft.curriculum_key={key!r}: sample {sample.id!r} has metadata[{key!r}] = {value!r}, "
                             "not an integer")
        stages.append(value)
    return stages
