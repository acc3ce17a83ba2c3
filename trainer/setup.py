"""What a training run and a standalone evaluation both build before any worker starts: the model folder,
the rollout engine's choice, the prompt renderer, and prompts that fit the model's context."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from data.schema import Sample
from trainer.chat import ChatFormat
from trainer.cluster import start_ray
from trainer.config import Config
from trainer.gc_pause import gc_paused
from trainer.modeling import (EMBEDDED_MODELS, apply_offline_mode, context_length, load_tokenizer, prepare_model,
                              resolve_tokenizer_path)
from trainer.prompt_sets import load_prompt_sets
from trainer.prompts import PromptRenderer, within_context
from trainer.rollout import choose_engine


@dataclass
class Policy:
    model_path: str
    "The model as a local Hugging Face folder (tiny models built, hub names downloaded)."
    tokenizer_path: str
    prompts: PromptRenderer
    pad_id: int
    configured_engine: str
    "rollout.engine as configured; `cfg.rollout.engine` holds the resolved choice."


def prepare_policy(cfg: Config, run_dir: Path, model_path: str | None = None) -> Policy:
    """The model folder (`model_path` when already prepared) and its prompt renderer; resolves
    `rollout.engine=auto` in `cfg`."""
    apply_offline_mode(cfg.model.offline)  # before any hub call (model, tokenizer, data)
    model_path = model_path or prepare_model(cfg.model, run_dir, cfg.trainer.seed)
    configured = cfg.rollout.engine
    cfg.rollout.engine = choose_engine(configured, model_path, gpus=cfg.resources.rollout.num_gpus > 0,
                                       tensor_parallel_size=cfg.rollout.tensor_parallel_size)
    tokenizer_path = resolve_tokenizer_path(cfg.model, model_path)
    tokenizer = load_tokenizer(tokenizer_path)
    prompts = PromptRenderer(tokenizer, ChatFormat.from_config(tokenizer, model_path, cfg.data), model_path, cfg.model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return Policy(model_path, tokenizer_path, prompts, pad_id, configured)


def fit_to_context(cfg: Config, policy: Policy, samples: list[Sample], split: str) -> list[Sample]:
    """The samples whose prompt leaves room for a full response in the model's context (the rest are
    dropped and counted up front, not failed inside the engine)."""
    context, limit = context_length(policy.model_path), cfg.data.max_prompt_tokens
    response = max(cfg.rollout.max_new_tokens, cfg.rollout.eval_max_new_tokens)
    if context is not None and response >= context:
        raise ValueError(f"rollout.max_new_tokens={cfg.rollout.max_new_tokens} / eval_max_new_tokens="
                         f"{cfg.rollout.eval_max_new_tokens}: the model's context is {context} tokens, so no prompt "
                         "would fit before a full response")
    if limit is None and context is not None:
        limit = context - response
    return within_context(policy.prompts, samples, limit, context, split, cfg.data.overlong_prompts)


def check_image_engine(cfg: Config, max_images: int) -> None:
    if cfg.rollout.engine == "vllm" and max_images and not cfg.engine.ray:
        raise ValueError(
            "rollout.engine=vllm with image prompts needs engine.ray=true: vLLM runs vision models on its "
            "Transformers backend, which patches transformers' model classes in its process, so rollout needs "
            "a process of its own (or use rollout.engine=hf)"
        )


@gc_paused()  # imports, tokenizer, data: trainer/gc_pause.py
def prepare_run(cfg: Config, run_dir: Path) -> tuple[Policy, list[Sample], list[Sample], int]:
    """A training run's policy, its training and held-out prompts fitted to the context, and the most images
    in one prompt. With engine.ray, Ray starts meanwhile (2.4-6 s on 2 cores): bad rows, missing files and a
    wrong model name fail first, then Ray starts on this thread (its processes end with the thread that
    started them) while another builds an embedded model, loads the tokenizer and fits the prompts."""
    apply_offline_mode(cfg.model.offline)  # before any hub call (model, tokenizer, data)
    train, held_out = load_prompt_sets(cfg, image_dir=run_dir / "images")
    named_model = None if cfg.model.path in EMBEDDED_MODELS else prepare_model(cfg.model, run_dir, cfg.trainer.seed)
    max_images = max((len(s.images) for s in train + held_out), default=0)

    def prepare():
        policy = prepare_policy(cfg, run_dir, named_model)
        check_image_engine(cfg, max_images)
        return policy, fit_to_context(cfg, policy, train, "train"), fit_to_context(cfg, policy, held_out, "held-out")

    if not cfg.engine.ray:
        return (*prepare(), max_images)
    import ray  # before the other thread imports transformers: no two first imports at once

    ray_was_up = ray.is_initialized()
    pool = ThreadPoolExecutor(1, thread_name_prefix="prepare")
    preparing = pool.submit(prepare)
    try:
        start_ray(cfg)
        prepared = preparing.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        if not ray_was_up and ray.is_initialized():
            ray.shutdown()
        raise
    pool.shutdown()
    return (*prepared, max_images)
