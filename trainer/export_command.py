"""`python -m trainer export CHECKPOINT [OUT]`: a checkpoint's actor weights as a Hugging Face model folder,
with the config and tokenizer (or a vision model's processor) of the folder the run's policy started from.
It reads the shards in this one process (torch.distributed.checkpoint reshards them; DeepSpeed's own
consolidation joins a ZeRO checkpoint's partitions), so it needs memory for the whole model once; a running
trainer writes `final_model/` itself, as the weights are gathered."""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = """usage: python -m trainer export CHECKPOINT [OUT]

  CHECKPOINT  a checkpoint folder, e.g. outputs/quickstart/checkpoints/step_00000040
  OUT         where to write the model folder (default: CHECKPOINT/hf_model)
"""


def export_checkpoint(checkpoint: Path, out: Path) -> Path:
    """Write `checkpoint`'s actor weights into `out` as a Hugging Face folder; errors name what is missing."""
    from trainer.checkpoint import actor_shards, load_checkpoint, read_deepspeed_weights, read_shards
    from trainer.modeling import load_causal_lm, load_tokenizer
    from trainer.vision import is_vision_model, load_processor

    state = load_checkpoint(checkpoint)
    shards = actor_shards(checkpoint, state)
    if "policy" not in state:
        raise ValueError(f"{checkpoint} does not name the folder its run started from (written before export "
                         "existed): load its weights with trainer.checkpoint.read_shards")
    policy = state["policy"]
    if not Path(policy["model"]).is_dir():
        raise FileNotFoundError(f"the run started from {policy['model']}, which is not a folder here any more")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the command's one line says what happened
    model = load_causal_lm(policy["model"])
    deepspeed = state["actor"].get("strategy") == "deepspeed"
    weights = read_deepspeed_weights(shards) if deepspeed else read_shards(shards)["model"]
    lora = state["actor"].get("lora")
    if lora:  # the shards hold the adapters only: onto the base model, then merged
        from types import SimpleNamespace

        from trainer.lora import add_lora, merged_weights
        from trainer.model_files import save_model_folder

        add_lora(model, SimpleNamespace(**lora))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected or any(".lora_" in key for key in missing):
            raise ValueError(f"{shards} does not hold the adapters of actor.lora={lora}")
        save_model_folder(model, merged_weights(model.state_dict().items(), model), str(out), file_bytes=1 << 30)
    else:
        model.load_state_dict(weights)
        model.save_pretrained(out)
    vision = is_vision_model(policy["model"])
    (load_processor(policy["tokenizer"]) if vision else load_tokenizer(policy["tokenizer"])).save_pretrained(out)
    return out


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv or not 1 <= len(argv) <= 2:
        print(USAGE)
        return 0 if argv and ("-h" in argv or "--help" in argv) else 2
    checkpoint = Path(argv[0])
    out = Path(argv[1]) if len(argv) == 2 else checkpoint / "hf_model"
    try:
        export_checkpoint(checkpoint, out)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"[export] {checkpoint} -> {out}")
    return 0
