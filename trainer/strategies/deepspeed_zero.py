"""DeepSpeed ZeRO-2 / ZeRO-3 data-parallel training strategy.

Gradient accumulation is left to the actor (DeepSpeed's unmanaged mode: `backward` only
accumulates, `step` reduces and updates), so mini- and micro-batching mean the same as with
the other strategies. DeepSpeed averages gradients over ranks; the actor scales its share of
the loss by the world size.

Checkpoints use DeepSpeed's own format: each rank writes its optimiser partition straight into the
checkpoint folder the controller is building.
"""

from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist

from trainer.strategies.base import adamw, warmup_schedule

TAG = "state"


class DeepSpeedStrategy:
    reshardable = False
    "A checkpoint loads only onto the number of ranks that wrote it."

    def __init__(self, model: torch.nn.Module, *, lr: float, weight_decay: float, betas, warmup_steps: int,
                 zero_stage: int = 2, grad_clip: float = 1.0, mixed_precision: bool = False, cpu_offload: bool = False,
                 checkpoint_frozen: bool = True):
        if zero_stage not in (1, 2, 3):
            raise ValueError(f"actor.zero_stage={zero_stage}: expected 1, 2 or 3")
        if not dist.is_initialized():
            raise RuntimeError("actor.strategy=deepspeed needs a process group: run it with resources.actor.count >= 1 "
                               "through the trainer, which starts one rank per actor worker")
        on_gpu = next(model.parameters()).is_cuda
        if not on_gpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed

        if not on_gpu:
            # DeepSpeed's CPU backend compiles its shared-memory all-reduce on every fresh machine (about a
            # minute) for inference only (`inference_all_reduce`); training's collectives are torch.distributed's.
            import deepspeed.ops

            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend=dist.get_backend())
        self.world_size, self.zero_stage, self.grad_clip = dist.get_world_size(), zero_stage, grad_clip
        self.checkpoint_frozen = checkpoint_frozen  # False (LoRA): the base model on disk holds the frozen part
        zero: dict = {"stage": zero_stage}
        if cpu_offload and on_gpu:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
            if zero_stage == 3:
                zero["offload_param"] = {"device": "cpu", "pin_memory": True}
        config = {
            # Batch sizes are the actor's business; these only satisfy DeepSpeed's bookkeeping.
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "managed_gradient_accumulation": False,
            "gradient_clipping": grad_clip if grad_clip > 0 else 0.0,
            "zero_optimization": zero,
            "bf16": {"enabled": bool(mixed_precision and on_gpu)},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10**12,
        }
        optimizer = adamw(model, lr=lr, weight_decay=weight_decay, betas=betas)
        scheduler = warmup_schedule(optimizer, warmup_steps)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config, dist_init_required=False,
        )
        self.model = self.engine  # forward through the engine: ZeRO-3 gathers parameters in its hooks

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)

    def optimizer_step(self, grad_clip: float) -> float:
        if grad_clip != self.grad_clip:
            raise ValueError(f"deepspeed clips at the norm it was built with ({self.grad_clip}), not {grad_clip}")
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        if norm is not None and not math.isfinite(float(norm)):
            # DeepSpeed steps before it reports the norm (and checks for overflow only with fp16 loss scaling).
            raise FloatingPointError(f"gradient norm {float(norm)} under DeepSpeed: the weights may no longer be "
                                     "finite; resume from the last checkpoint (actor.strategy=torch/fsdp2 skip such steps)")
        return float(norm) if norm is not None else float("nan")

    def full_weights(self):
        """(name, unsharded tensor) pairs, one at a time: under ZeRO-3 each parameter is gathered (a collective
        every rank runs through) and released when the next is asked for; read each before taking the next."""
        import deepspeed

        for name, value in self.engine.module.state_dict(keep_vars=True).items():
            if self.zero_stage == 3 and hasattr(value, "ds_id"):
                with deepspeed.zero.GatheredParameters([value], modifier_rank=None):
                    yield name, value.detach()
            else:
                yield name, value.detach()

    def save_shards(self, folder: str) -> dict:
        """DeepSpeed's own format: each rank writes its optimiser partition, rank 0 the module. Collective."""
        self.engine.save_checkpoint(folder, tag=TAG, save_latest=False,
                                    exclude_frozen_parameters=not self.checkpoint_frozen)
        return {}

    def load_shards(self, folder: str, small: dict) -> None:
        """Needs the number of ranks that wrote it (DeepSpeed's partitions are per rank)."""
        path, _ = self.engine.load_checkpoint(folder, tag=TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=True, load_module_strict=self.checkpoint_frozen)
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint in {folder} (rank {dist.get_rank()})")
