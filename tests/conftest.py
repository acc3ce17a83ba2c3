"""Shared fixtures: a tiny model built once per session, and quiet, single-threaded defaults."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# Ray workers' output (model-load bars) would reach the terminal after a test's capture has ended.
os.environ.setdefault("RAY_LOG_TO_DRIVER", "0")

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The embedded tiny Qwen2 + tokenizer, random init, saved to a folder."""
    from trainer.config import TinyModelConfig
    from trainer.tiny_model import build_tiny_model

    return str(build_tiny_model(TinyModelConfig(), tmp_path_factory.mktemp("tiny") / "model", seed=0))
