"""LoRA for the actor (actor.lora, with peft): adapters in, merged weights out.

The adapters are injected into the Hugging Face model in place, so the actor's forward passes, log-probs
and losses run on the same model object as without LoRA; only the adapters train. The rollout engines and
the saved model receive merged weights under the base model's names (W + B A * alpha / rank per adapted
layer, one layer at a time), so an engine never knows LoRA was used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch


def add_lora(model: torch.nn.Module, cfg) -> torch.nn.Module:
    """`model` with LoRA adapters of `cfg` (actor.lora: rank, alpha, target_modules, dropout) injected; every
    other parameter frozen. Returns the same Hugging Face model object, adapted."""
    import peft

    config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.target_modules),
                             lora_dropout=cfg.dropout, bias="none")
    try:
        peft.get_peft_model(model, config)
    except ValueError as error:  # e.g. a target module the model does not have
        raise ValueError(f"actor.lora.target_modules={list(cfg.target_modules)}: {error}") from None
    return model


def merged_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of the model as if the adapters were merged, under the base model's names; a merged
    tensor is built for one layer at a time (read it before taking the next)."""
    from peft.tuners.lora import LoraLayer

    adapted = {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    for key, value in model.state_dict().items():
        if any(part.startswith("lora_") for part in key.split(".")):
            continue  # an adapter's own tensor: merged into its base layer's weight below
        module_name, _, leaf = key.rpartition(".")
        owner = module_name.removesuffix(".base_layer")
        if owner != module_name and owner in adapted:
            layer = adapted[owner]
            if leaf == "weight":
                value = value + sum(layer.get_delta_weight(name) for name in layer.active_adapters)
            key = f"{owner}.{leaf}"
        yield key, value.detach()


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors under the names peft's PeftModel gives them (what `save_adapter` writes)."""
    import peft

    return {f"base_model.model.{k}": v.detach().cpu() for k, v in peft.get_peft_model_state_dict(model).items()}


def save_adapter(model: torch.nn.Module, out_dir: str | Path) -> None:
    """The adapters as peft writes them (adapter_config.json, adapter_model.safetensors), so that
    peft.PeftModel.from_pretrained(base_model, out_dir) loads them."""
    from safetensors.torch import save_file

    model.peft_config["default"].save_pretrained(str(out_dir))
    save_file(adapter_state(model), str(Path(out_dir) / "adapter_model.safetensors"), metadata={"format": "pt"})
