"""The training-strategy interface, the optimiser helpers every strategy shares, and `torch` (one device).

The actor worker only talks to `TrainingStrategy`; `factory.make_strategy` picks one by name:
`torch` here, the data-parallel sharded ones in `fsdp2.py` (torch FSDP2) and `deepspeed_zero.py` (ZeRO-1/2/3).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Protocol

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions


class TrainingStrategy(Protocol):
    model: torch.nn.Module
    world_size: int
    "Data-parallel ranks; the actor scales each rank's share of the loss by it."

    def backward(self, loss: torch.Tensor) -> None: ...

    def optimizer_step(self, grad_clip: float) -> float:
        """Clip, step, zero grads, advance the schedule; returns the pre-clip grad norm. A non-finite norm
        skips the step (weights and optimiser state untouched) where the strategy can."""

    def full_weights(self):
        """(name, unsharded tensor) pairs, gathered one at a time where the strategy can."""

    def save_shards(self, folder: str) -> dict:
        """Each rank writes its own part of the model and optimiser state into `folder` (collective); returns
        the small state the controller keeps (the learning-rate schedule)."""

    def load_shards(self, folder: str, small: dict) -> None: ...


@contextlib.contextmanager
def single_process_ok():
    """torch.distributed.checkpoint warns whenever it runs without a process group, which is intended here
    (one worker) and in tools that read a checkpoint."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    )


def adamw(model: torch.nn.Module, *, lr: float, weight_decay: float, betas, fused: bool = False) -> torch.optim.AdamW:
    """`fused`: one kernel over all parameters (5x faster than foreach for SmolLM2-135M on CPU); for plain
    tensors, not the sharded ones of FSDP2 / DeepSpeed."""
    # Frozen parameters (actor.freeze) stay out of the optimiser, so they stay bit-identical.
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay, betas=tuple(betas), fused=fused or None)


class TorchStrategy:
    """Plain PyTorch on one device: AdamW, gradient clipping, linear warm-up."""

    world_size = 1
    reshardable = True
    "A checkpoint loads onto any number of ranks (torch.distributed.checkpoint reshards)."

    def __init__(self, model: torch.nn.Module, *, lr: float, weight_decay: float, betas, warmup_steps: int,
                 fused: bool = True, checkpoint_frozen: bool = True):
        self.model = model
        # False (LoRA): checkpoints leave out the frozen parameters; the base model on disk has them.
        self.state_options = StateDictOptions(ignore_frozen_params=not checkpoint_frozen, strict=checkpoint_frozen)
        self.optimizer = adamw(model, lr=lr, weight_decay=weight_decay, betas=betas, fused=fused)
        self.scheduler = warmup_schedule(self.optimizer, warmup_steps)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def optimizer_step(self, grad_clip: float) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = grad_clip if grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(grad_norm, "full_tensor"):  # sharded parameters (FSDP2) give a sharded norm
            grad_norm = grad_norm.full_tensor()
        if not torch.isfinite(grad_norm):
            # Guard: weights, optimiser moments and the schedule stay as they were (the norm is global, so
            # every rank skips together).
            self.optimizer.zero_grad(set_to_none=True)
            return float(grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return float(grad_norm)

    def full_weights(self):
        """(name, unsharded tensor) pairs on the parameters' device, gathered one at a time and not
        copied: read each before taking the next. With FSDP2 a collective every rank must run through."""
        for key, value in self.model.state_dict().items():
            yield key, (value.full_tensor() if hasattr(value, "full_tensor") else value).detach()

    def save_shards(self, folder: str) -> dict:
        """Model and optimiser state with torch.distributed.checkpoint: one file per rank holding its shard
        (one process: the whole state), which any number of ranks can load back. Collective."""
        import torch.distributed.checkpoint as dcp

        model_state, optim_state = self._checkpointed_state()
        with single_process_ok():
            dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=folder,
                     no_dist=not dist.is_initialized())
        return {"scheduler": self.scheduler.state_dict()}

    def _checkpointed_state(self) -> tuple[dict, dict]:
        """The model and optimiser state a checkpoint holds: everything, or the trainable part only."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optim_state = get_state_dict(self.model, self.optimizer, options=self.state_options)
        if self.state_options.ignore_frozen_params:  # a head tied to frozen embeddings still shows up: drop it
            trainable = {name for name, p in self.model.named_parameters() if p.requires_grad}
            model_state = {k: v for k, v in model_state.items() if k in trainable}
        return model_state, optim_state

    def load_shards(self, folder: str, small: dict) -> None:
        """Each rank reads the parts of its own shard, whatever number of ranks wrote them. Collective."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        # The state dict of the right shapes and shards, filled in place by dcp.load.
        model_state, optim_state = self._checkpointed_state()
        state = {"model": model_state, "optimizer": optim_state}
        with single_process_ok():
            dcp.load(state, checkpoint_id=folder, no_dist=not dist.is_initialized())
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=self.state_options)
        self.scheduler.load_state_dict(small["scheduler"])
