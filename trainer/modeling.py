"""Loading models and computing response log-probs: shared by actor, reference and HF rollout."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from trainer.algorithms import entropy_from_logits, logprobs_from_logits
from trainer.batch import TrainBatch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelNotFoundError(FileNotFoundError):
    pass


def resolve_model_path(path: str) -> str:
    """A local folder as is; a hub name only if it is in the local cache (runs are offline)."""
    if Path(path).is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - any hub failure means "not available offline"
        raise ModelNotFoundError(
            f"model.path={path!r} is not a local folder and is not in the local Hugging Face cache "
            f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}); this machine cannot download it. "
            "Use model.path=tiny for the embedded tiny model, or point model.path at a local copy. "
            f"({type(error).__name__})"
        ) from None


def load_causal_lm(path: str, dtype: str = "float32"):
    """A text or vision-language model for generation and training."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from trainer.vision import is_vision_model

    if dtype not in DTYPES:
        raise ValueError(f"model.dtype={dtype!r}: expected one of {sorted(DTYPES)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    auto = AutoModelForImageTextToText if is_vision_model(path) else AutoModelForCausalLM
    return auto.from_pretrained(path, dtype=DTYPES[dtype]).to(device)


def image_token_id(model) -> int | None:
    return getattr(getattr(model, "config", None), "image_token_id", None)


def forward_inputs(model, input_ids: torch.Tensor, media: list | None, device) -> dict:
    """Extra forward keywords for rows with images (none for text-only batches)."""
    if not media or all(m is None for m in media):
        return {}
    from trainer.vision import vision_inputs

    token = image_token_id(getattr(model, "module", model))
    if token is None:
        raise ValueError("the batch has images but the model is text-only (no image_token_id in its config)")
    return {k: v.to(device) for k, v in vision_inputs(input_ids, media, token).items()}


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def response_logprobs(
    model, batch: TrainBatch, temperature: float, *, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs [B, R] of each response token (and entropy of each position's distribution)."""
    device = next(model.parameters()).device
    input_ids = batch.input_ids.to(device)
    extra = forward_inputs(model, batch.input_ids, batch.media, device)
    logits = model(input_ids=input_ids, attention_mask=batch.attention_mask.to(device), **extra).logits
    # Position t predicts token t+1: gather the logits that predict response tokens.
    positions = batch.response_positions().to(device) - 1
    vocab = logits.shape[-1]
    logits = logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, vocab))
    if temperature > 0:
        logits = logits / temperature
    labels = input_ids.gather(1, positions + 1)
    logp = logprobs_from_logits(logits, labels)
    entropy = entropy_from_logits(logits) if with_entropy else None
    return logp, entropy
