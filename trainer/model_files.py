"""A Hugging Face model folder written from weights that arrive one tensor at a time (a sharded actor's
gather), so the writing rank holds one file's worth at most; and the parameter names checkpoints use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch


def checkpoint_name(name: str) -> str:
    """Qwen2-VL family weights under the names their checkpoints use, which is what vLLM loads: transformers
    holds them as model.language_model.* and model.visual.* but saves model.* and visual.*. Other names
    are unchanged."""
    if name.startswith("model.visual."):
        return name[len("model."):]
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model."):]
    return name


def checkpoint_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {checkpoint_name(name): tensor for name, tensor in state_dict.items()}


def tied_duplicates(model: torch.nn.Module) -> set[str]:
    """State-dict names that repeat a tensor already named earlier (tied embeddings): save_pretrained leaves
    them out, and loading ties them again."""
    seen, duplicates = set(), set()
    for name, value in model.state_dict(keep_vars=True).items():
        if id(value) in seen:
            duplicates.add(name)
        seen.add(id(value))
    return duplicates


def save_model_folder(model: torch.nn.Module, named_tensors: Iterable[tuple[str, torch.Tensor]], out_dir: str,
                      file_bytes: int) -> None:
    """`model`'s config and generation config, and its weights from `named_tensors` in safetensors files of at
    most `file_bytes` (one tensor larger than that gets a file of its own) with their index, as
    save_pretrained writes them."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    skip = tied_duplicates(model)
    current: dict[str, torch.Tensor] = {}  # the file being filled
    size = 0
    paths: list[Path] = []

    def write(tensors: dict[str, torch.Tensor]) -> None:
        paths.append(out / f"part-{len(paths):05d}.safetensors")
        save_file(tensors, paths[-1], metadata={"format": "pt"})

    weight_map: dict[str, int] = {}
    total = 0
    for name, tensor in named_tensors:
        if name in skip:
            continue
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > file_bytes:
            write(current)
            current, size = {}, 0
        key = checkpoint_name(name)
        current[key] = tensor.detach().to("cpu", copy=True)
        weight_map[key] = len(paths)
        size += nbytes
        total += nbytes
    write(current)
    # The names save_pretrained uses: one file is model.safetensors, several are model-0000i-of-0000n.
    count = len(paths)
    names = (["model.safetensors"] if count == 1
             else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)])
    for path, final in zip(paths, names):
        path.rename(out / final)
    if count > 1:
        index = {"metadata": {"total_size": total}, "weight_map": {k: names[i] for k, i in weight_map.items()}}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    model.config.save_pretrained(out)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
