"""FSDP2 (torch `fully_shard`) data-parallel training strategy.

Parameters, gradients and optimiser state are sharded across the actor workers.
`reshard_after_forward=True` frees gathered parameters after each forward (ZeRO-3
memory); False keeps them until backward (ZeRO-2: less communication, more memory).
Each decoder layer is its own FSDP unit so only one layer is gathered at a time.

Gradients are averaged over ranks by FSDP; the actor scales its per-rank loss by the
world size, so the result equals one worker training on the whole mini-batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from trainer.strategies.base import TorchStrategy


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    # HF decoder models keep their blocks in a ModuleList named `layers` (Qwen2, Llama, ...).
    for name, module in model.named_modules():
        if name.endswith("layers") and isinstance(module, torch.nn.ModuleList):
            return list(module)
    return []


class FSDP2Strategy(TorchStrategy):
    """The plain strategy's optimiser, step and weight gathering over a model sharded with `fully_shard`."""

    def __init__(self, model: torch.nn.Module, *, lr: float, weight_decay: float, betas, warmup_steps: int,
                 reshard_after_forward: bool = True, mixed_precision: bool = False, cpu_offload: bool = False,
                 checkpoint_frozen: bool = True):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        if not dist.is_initialized():
            raise RuntimeError("actor.strategy=fsdp2 needs a process group: run it with resources.actor.count >= 1 "
                               "through the trainer, which starts one rank per actor worker")
        on_gpu = next(model.parameters()).is_cuda
        mesh = init_device_mesh("cuda" if on_gpu else "cpu", (dist.get_world_size(),))
        options = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
        if mixed_precision and on_gpu:
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if cpu_offload and on_gpu:
            options["offload_policy"] = CPUOffloadPolicy()
        for layer in _decoder_layers(model):
            fully_shard(layer, **options)
        fully_shard(model, **options)
        super().__init__(model, lr=lr, weight_decay=weight_decay, betas=betas, warmup_steps=warmup_steps,
                         fused=False, checkpoint_frozen=checkpoint_frozen)
        self.world_size = dist.get_world_size()
