"""Models and tokenizers named on the Hugging Face hub: download into the cache, or find them there
offline, and say exactly what was tried when neither works. Imports no torch."""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path


class ModelNotFoundError(FileNotFoundError):
    pass


# Files a checkpoint repo often carries that the trainer never reads (other frameworks' formats,
# quantised exports, the original authors' checkpoints).
SKIPPED_FILES = ["*.gguf", "*.pth", "original/*", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "*.tflite", "*.ot"]
# What AutoTokenizer reads: the tokenizer files, config.json and a chat template.
TOKENIZER_FILES = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja"]
_TRUE = {"1", "ON", "YES", "TRUE"}


def offline_reason(offline: bool = False) -> str | None:
    """Why the hub must not be contacted (None = online): model.offline or the environment."""
    if offline:
        return "model.offline=true"
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").upper() in _TRUE:
            return f"{name}={os.environ[name]} in the environment"
    from huggingface_hub import constants

    return "HF_HUB_OFFLINE was set when huggingface_hub was imported" if constants.HF_HUB_OFFLINE else None


def apply_offline_mode(offline: bool) -> None:
    """model.offline=true: HF_HUB_OFFLINE=1 for this process and the workers it starts. Libraries
    that were imported already read the variable at import, so their copies are switched too."""
    if not offline:
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    for module_name in ("huggingface_hub.constants", "datasets.config"):
        module = sys.modules.get(module_name)
        if module is not None:
            module.HF_HUB_OFFLINE = True


def resolve_model_path(path: str, revision: str | None = None, *, offline: bool = False,
                       allow_patterns: list[str] | None = None, what: str = "model.path") -> str:
    """A local folder as is; otherwise a hub name, downloaded into the Hugging Face cache (or found
    there when offline). Raises ModelNotFoundError saying what was tried, in order, and what to do."""
    local = Path(path).expanduser()
    if local.is_dir():
        return str(local)
    from huggingface_hub import HfApi, constants, snapshot_download

    why_offline = offline_reason(offline)
    hub_error: Exception | None = None
    if why_offline is None:
        try:
            files = [s.rfilename for s in HfApi().model_info(path, revision=revision).siblings or []]
            return snapshot_download(path, revision=revision, allow_patterns=allow_patterns,
                                     ignore_patterns=_skipped(files))
        except Exception as error:  # noqa: BLE001 - classified in the message; the cache may still have it
            hub_error = error
    try:
        # Skipping *.bin matches both ways the folder may have been downloaded (with or without them).
        found = snapshot_download(path, revision=revision, local_files_only=True,
                                  allow_patterns=allow_patterns, ignore_patterns=SKIPPED_FILES + ["*.bin"])
    except Exception as error:  # noqa: BLE001
        cache_error = error
    else:
        if hub_error is not None:
            warnings.warn(f"{what}={path!r}: the hub failed ({hub_reason(hub_error, revision)[1]}); "
                          f"using the cached copy {found}", stacklevel=2)
        return found
    raise ModelNotFoundError(_not_found_message(
        what, path, revision, local, constants.HF_HUB_CACHE, constants.ENDPOINT, cache_error, hub_error, why_offline))


def resolve_tokenizer_path(model, model_path: str) -> str:
    """The tokenizer folder for a ModelConfig: model.tokenizer resolved like model.path (tokenizer
    files only, the repo's default branch); None = the model's own folder `model_path`."""
    if not model.tokenizer:
        return model_path
    return resolve_model_path(model.tokenizer, offline=model.offline, allow_patterns=TOKENIZER_FILES,
                              what="model.tokenizer")


def _skipped(files: list[str]) -> list[str]:
    # PyTorch .bin weights are a fallback format: not needed when the repo has safetensors.
    return SKIPPED_FILES + (["*.bin"] if any(f.endswith(".safetensors") for f in files) else [])


def hub_reason(error: Exception, revision: str | None) -> tuple[str, str]:
    """(kind, what the hub answered) for a failed hub call; kind picks the advice."""
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, HfHubHTTPError, IncompleteSnapshotError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    status = getattr(getattr(error, "response", None), "status_code", None)
    http = f" (HTTP {status})" if status else ""
    if isinstance(error, HFValidationError):
        return "name", "not tried: not a hub repo name (expected org/name)"
    if isinstance(error, GatedRepoError):
        return "access", f"gated repository{http}: access needs an accepted licence and a token"
    if isinstance(error, RepositoryNotFoundError):
        return "access", f"repository not found{http} (a private one answers the same without a valid token)"
    if isinstance(error, RevisionNotFoundError):
        return "revision", f"revision {revision!r} not found{http}"
    if isinstance(error, HfHubHTTPError) and status in (401, 403):
        return "access", f"access refused{http}: the token is missing or lacks access"
    if isinstance(error, HfHubHTTPError):
        return "other", f"request failed{http}"
    if isinstance(error, LocalEntryNotFoundError) and not isinstance(error, IncompleteSnapshotError):
        error = error.__cause__ or error  # snapshot_download wraps connection failures
    detail = f"{type(error).__name__}: {_scrub((str(error).splitlines() or [''])[0])}"
    # httpx's ConnectError / ConnectTimeout / ReadTimeout, or the stdlib's connection errors.
    if isinstance(error, ConnectionError) or any(k in type(error).__name__ for k in ("Connect", "Timeout")):
        return "network", f"unreachable ({detail})"
    return "other", detail


def _not_found_message(what, path, revision, local, cache_dir, endpoint, cache_error, hub_error, why_offline) -> str:
    from huggingface_hub.errors import HFValidationError, IncompleteSnapshotError

    rev = f" (revision {revision!r})" if revision else ""
    if isinstance(cache_error, HFValidationError):
        cache = "not tried: not a hub repo name (expected org/name)"
    elif isinstance(cache_error, IncompleteSnapshotError):
        cache = f"incomplete{rev}: an interrupted download left files missing"
    else:
        cache = f"not there{rev}"
    if why_offline:
        kind, hub = "offline", f"skipped: offline ({why_offline})"
    else:
        kind, hub = hub_reason(hub_error, revision)
    if isinstance(cache_error, HFValidationError):
        kind = "name"
    lines = [
        f"{what}={path!r} was not found. Tried:",
        f"  1. local folder: {'not a folder' if local.exists() else 'not found'} at {local.resolve()}",
        f"  2. Hugging Face cache {cache_dir}: {cache}",
        f"  3. hub {endpoint}: {hub}",
        "What to do: " + "; ".join(_advice(what, kind)) + ".",
    ]
    return "\n".join(lines)


def _advice(what: str, kind: str) -> list[str]:
    if kind == "name":
        advice = [f"point {what} at an existing folder, or give a hub name as org/name"]
    else:
        advice = [f"check {what} (a hub name is org/name, as on its hub page)"]
    advice += {
        "access": ["for a gated or private model: accept its licence on the hub page, then `hf auth login` "
                   "(older huggingface_hub: `huggingface-cli login`) or set HF_TOKEN"],
        "revision": ["check model.revision (a branch, tag or commit of that repo)"],
        "network": ["check the network and HF_ENDPOINT, or copy the model here and give its folder"],
        "offline": ["to download it, run online: unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) and leave "
                    "model.offline=false"],
    }.get(kind, [])
    if what == "model.path":
        advice.append("or use model.path=tiny for the embedded tiny model")
    else:
        advice.append(f"or leave {what} unset to use the model's own")
    return advice


def _scrub(text: str) -> str:
    """Never print a token: drop any configured token value and anything shaped like one."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        token = os.environ.get(name)
        if token:
            text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)
