"""LoRA for the actor (actor.lora, with peft): adapters in, merged weights out.

The adapters are injected into the Hugging Face model in place, so the actor's forward passes, log-probs
and losses run on the same model object as without LoRA; only the adapters train. The rollout engines and
the saved model receive merged weights under the base model's names (W + B A * alpha / rank per adapted
layer, one layer at a time), so an engine never knows LoRA was used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

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


def merged_weights(named_tensors: Iterable[tuple[str, torch.Tensor]], model: torch.nn.Module,
                   adapters: dict[str, torch.Tensor] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of the model as if the adapters were merged, under the base model's names.

    `named_tensors` are the full (gathered) tensors in state-dict order, one at a time, as a strategy's
    `full_weights` gives them: plain, FSDP2 or ZeRO-3 alike. An adapted layer's base weight comes before its
    adapters, so it is held (one layer at a time) until they arrive. `adapters`, when given, collects CPU
    copies of the adapters' own tensors (what `save_adapter` writes)."""
    from peft.tuners.lora import LoraLayer

    adapted = {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    held: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in named_tensors:
        module_name, _, leaf = key.rpartition(".")
        parts = module_name.split(".")
        lora_at = next((i for i, part in enumerate(parts) if part.startswith("lora_")), None)
        if lora_at is not None:  # <owner>.lora_A.<adapter>.weight
            if adapters is not None:
                adapters[key] = value.detach().to("cpu", copy=True)
            owner = ".".join(parts[:lora_at])
            if owner in held:
                held[owner][f"{parts[lora_at]}.{parts[lora_at + 1]}"] = value.detach().clone()
                merged = _merge_when_complete(adapted[owner], held[owner])
                if merged is not None:
                    del held[owner]
                    yield f"{owner}.weight", merged
            continue
        owner = module_name.removesuffix(".base_layer")
        if owner != module_name and owner in adapted:
            if leaf == "weight":
                held[owner] = {"weight": value.detach().clone()}  # gathered tensors are released on the next
                continue
            key = f"{owner}.{leaf}"
        yield key, value.detach()
    if held:
        raise RuntimeError(f"LoRA layers whose adapters never came: {sorted(held)}")


def _merge_when_complete(layer, parts: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """W + (B A) * scale summed over the active adapters, once every one of them has arrived; else None."""
    names = list(layer.active_adapters)
    if any(f"lora_{ab}.{name}" not in parts for name in names for ab in "AB"):
        return None
    merged = parts["weight"]
    for name in names:
        delta = (parts[f"lora_B.{name}"] @ parts[f"lora_A.{name}"]) * layer.scaling[name]
        merged = merged + (delta.T if getattr(layer, "fan_in_fan_out", False) else delta)
    return merged


def adapter_state(model: torch.nn.Module, adapters: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapters' tensors under the names peft's PeftModel gives them (what `save_adapter` writes); from
    `adapters` (full tensors under the model's names) where the model's own are sharded."""
    import peft

    state = peft.get_peft_model_state_dict(model, state_dict=adapters)
    return {f"base_model.model.{k}": v.detach().cpu() for k, v in state.items()}


def save_adapter(model: torch.nn.Module, out_dir: str | Path, adapters: dict[str, torch.Tensor] | None = None) -> None:
    """The adapters as peft writes them (adapter_config.json, adapter_model.safetensors), so that
    peft.PeftModel.from_pretrained(base_model, out_dir) loads them."""
    from safetensors.torch import save_file

    model.peft_config["default"].save_pretrained(str(out_dir))
    save_file(adapter_state(model, adapters), str(Path(out_dir) / "adapter_model.safetensors"),
              metadata={"format": "pt"})
