"""Image inputs for vision-language policies (Qwen2-VL family): processor, prompt encoding, model inputs.

A prompt with images is its token ids (each image already expanded to its `<|image_pad|>` run)
plus a `Media` holding the processor's pixel patches and grid sizes. Sequences keep their images
through rollout, old/reference log-probs and the update, so every forward pass sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Media:
    """One prompt's images after the processor: patches [P, D] and (t, h, w) patch grids [n_images, 3]."""

    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    image_tokens: int  # <|image_pad|> tokens the prompt must hold for these images
    source: str  # the sample it came from, for errors
    image_paths: tuple[str, ...] = ()  # the files, for engines that run their own processor (vLLM)


def has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - a CUDA build beside CPU torch fails with RuntimeError, not ImportError
        return False
    return True


def image_only_processor_class():
    """Qwen2VLProcessor without its video half.

    transformers builds Qwen2-VL's video processor only with torchvision, and refuses a processor
    without one; where torchvision is missing (no CPU build is installable here) images still work
    through the PIL image processor, so this subclass declares images and text only.
    """
    from transformers import Qwen2VLProcessor

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super(Qwen2VLProcessor, self).__init__(image_processor, tokenizer, chat_template=chat_template)
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)

    return ImageOnlyQwen2VLProcessor


def register_image_only_processor() -> None:
    """Make AutoProcessor build the image-only processor for Qwen2-VL family folders (for vLLM, which
    loads the processor itself) where torchvision is missing."""
    if has_torchvision():
        return
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2VLConfig

    for config_class in (Qwen2VLConfig, Qwen2_5_VLConfig):
        AutoProcessor.register(config_class, image_only_processor_class(), exist_ok=True)


def collapse_image_runs(token_ids: list[int], image_token_id: int) -> list[int]:
    """Each run of image placeholder tokens as one token: the prompt as it was before the processor
    expanded it, which is the form vLLM expects (it expands placeholders itself)."""
    out: list[int] = []
    for token in token_ids:
        if token == image_token_id and out and out[-1] == image_token_id:
            continue
        out.append(token)
    return out


def is_vision_model(path: str) -> bool:
    import json

    config = Path(path) / "config.json"
    return config.exists() and "vision_config" in json.loads(config.read_text())


def load_processor(path: str, min_pixels: int | None = None, max_pixels: int | None = None):
    """The model folder's processor, with the image resize bounds from config when given."""
    if has_torchvision():
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(path)
    else:
        processor = image_only_processor_class().from_pretrained(path)
    image_processor = processor.image_processor
    if min_pixels or max_pixels:
        size = dict(image_processor.size)
        size["shortest_edge"] = min_pixels or size["shortest_edge"]
        size["longest_edge"] = max_pixels or size["longest_edge"]
        image_processor.size = size
    return processor


def load_images(paths: list[str], source: str):
    from PIL import Image

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except (OSError, ValueError) as error:
            raise ValueError(f"sample {source}: cannot read image {path!r}: {error}") from None
    return images


def encode_with_images(processor, text: str, image_paths: list[str], source: str) -> tuple[list[int], Media]:
    """Token ids with each image's placeholder expanded, and the image tensors that fill them."""
    placeholders = text.count(processor.image_token)
    if placeholders != len(image_paths):
        raise ValueError(
            f"sample {source}: the prompt has {placeholders} image placeholders for {len(image_paths)} images "
            "(messages need one {'type': 'image'} part per entry in 'images')"
        )
    encoded = processor(text=[text], images=load_images(image_paths, source), return_tensors="pt")
    media = Media(
        pixel_values=encoded["pixel_values"],
        image_grid_thw=encoded["image_grid_thw"],
        image_tokens=expected_image_tokens(encoded["image_grid_thw"], processor.image_processor.merge_size),
        source=source,
        image_paths=tuple(image_paths),
    )
    return encoded["input_ids"][0].tolist(), media


def expected_image_tokens(image_grid_thw: torch.Tensor, merge_size: int) -> int:
    return int(image_grid_thw.prod(-1).sum()) // (merge_size * merge_size)


def vision_inputs(input_ids: torch.Tensor, media: list[Media | None], image_token_id: int) -> dict[str, torch.Tensor]:
    """Keyword inputs for a Qwen2-VL forward/generate over rows `input_ids` [B, L] with per-row media.

    Checks first that each row holds exactly as many image tokens as its images make features: a
    mismatch would otherwise surface deep in the model without saying which sample."""
    is_image = input_ids == image_token_id
    for row, item in enumerate(media):
        found = int(is_image[row].sum())
        wanted = item.image_tokens if item is not None else 0
        if found != wanted:
            where = item.source if item is not None else f"row {row} (no images attached)"
            raise ValueError(
                f"sample {where}: {found} image tokens in the sequence but its images give {wanted} features; "
                "the prompt ids and the images were encoded separately or truncated"
            )
    present = [m for m in media if m is not None]
    if not present:
        return {}
    return {
        "pixel_values": torch.cat([m.pixel_values for m in present]),
        "image_grid_thw": torch.cat([m.image_grid_thw for m in present]),
        # 1 marks image positions (Qwen2-VL computes its 3-D rotary positions from these).
        "mm_token_type_ids": is_image.long(),
    }


def vision_module_prefixes(model: torch.nn.Module) -> list[str]:
    """Parameter-name prefixes of the vision tower and its projector (Qwen2-VL's `visual`, merger included)."""
    prefixes = []
    for name, _ in model.named_modules():
        if name.endswith("visual") and not any(name.startswith(p) for p in prefixes):
            prefixes.append(name + ".")
    if not prefixes:
        raise ValueError(f"actor.freeze_vision=true but {type(model).__name__} has no vision tower (no 'visual' module)")
    return prefixes
