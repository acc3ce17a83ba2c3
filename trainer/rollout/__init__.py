"""Rollout engines (vLLM, HF generate), what they take and return (`sampling.py`), and how new weights reach them.

An engine is built by name (`rollout.engine`) with `ENGINES.get(name)(model_path, dtype=, seed=, tokenizer=,
**options)` and offers `generate(prompts, spec, indices, media=None)`, `load_weights`, `weights`, `sleep`,
`wake_up`. The engine modules import their backends (vLLM, transformers) only when built.
"""

from __future__ import annotations

from plugins.registry import Registry

ENGINES = Registry("rollout engine", args=1)


@ENGINES.register("vllm")
def vllm(model_path: str, *, dtype: str, seed: int, tokenizer: str | None = None, **options):
    """vLLM (the CPU build here, CUDA on GPUs); `options` are VLLMEngine's (context, KV cache, sleep mode, images)."""
    from trainer.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(model_path, dtype=dtype, seed=seed, tokenizer=tokenizer, **options)


@ENGINES.register("hf")
def hf(model_path: str, *, dtype: str, seed: int, tokenizer: str | None = None):
    """Hugging Face generate: the fallback, and the exact reference for log-prob parity."""
    from trainer.rollout.hf_engine import HFEngine

    # Token ids in, token ids out: the HF engine never tokenises, so the trainer's tokenizer is the only one.
    return HFEngine(model_path, dtype=dtype, seed=seed)
