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


# Measured on a 2-core CPU (bench/RESULTS.md, "Choosing the engine"): for the quickstart's 0.74M-parameter model
# the HF engine generates a step's batch faster than vLLM and starts in about half the time; for SmolLM2-135M,
# vLLM generates faster. The threshold sits between the two measured sizes.
HF_ENGINE_BELOW_PARAMS = 20_000_000


def choose_engine(name: str, model_path: str, *, gpus: bool, tensor_parallel_size: int = 1) -> str:
    """`rollout.engine` with `auto` resolved: hf for models under HF_ENGINE_BELOW_PARAMS parameters on CPU,
    vllm otherwise (GPUs, sharded engines, larger models, or a folder without safetensors to count)."""
    if name != "auto":
        return name
    if gpus or tensor_parallel_size > 1:
        return "vllm"
    count = parameter_count(model_path)
    return "hf" if count is not None and count < HF_ENGINE_BELOW_PARAMS else "vllm"


def parameter_count(model_path: str) -> int | None:
    """Parameters stored in a model folder's safetensors files (headers only); None when it has none."""
    import math
    from pathlib import Path

    from safetensors import safe_open

    files = sorted(Path(model_path).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), "pt") as handle:
            total += sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())
    return total
