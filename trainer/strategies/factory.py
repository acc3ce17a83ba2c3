"""`actor.strategy` name -> training strategy, keeping only the options that strategy's constructor takes."""

from __future__ import annotations

import torch

from plugins.registry import Registry
from trainer.strategies.base import TorchStrategy, TrainingStrategy
from trainer.strategies.deepspeed_zero import DeepSpeedStrategy
from trainer.strategies.fsdp2 import FSDP2Strategy

# cls(model, *, lr, weight_decay, betas, warmup_steps, **options): the options with defaults are the
# strategy's own (reshard_after_forward, zero_stage, ...), read from its signature.
STRATEGIES = Registry("training strategy", args=1)
STRATEGIES.register("torch")(TorchStrategy)
STRATEGIES.register("fsdp2")(FSDP2Strategy)
STRATEGIES.register("deepspeed")(DeepSpeedStrategy)
COMMON = ("lr", "weight_decay", "betas", "warmup_steps")


def make_strategy(name: str, model: torch.nn.Module, **kwargs) -> TrainingStrategy:
    try:
        strategy = STRATEGIES.get(name)
    except KeyError:
        raise ValueError(f"actor.strategy={name!r} is not available; available: {STRATEGIES.names()}") from None
    return strategy(model, **{k: v for k, v in kwargs.items() if k in COMMON or k in strategy.params})
