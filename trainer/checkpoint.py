"""Atomic training checkpoints.

Layout under a checkpoint root:

    root/step_00000100/
        sampler.pt  rng.pt  ...       one file per top-level entry of `state`
        actor/                        a folder entry: written by the workers themselves (each rank its shard)
        meta.json                     {"step", "entries", "folders", "time"}, written last

A checkpoint is built in `root/.tmp-step_XXXXXXXX-<pid>` and renamed into place,
so a crash never leaves a half-written `step_*` folder. A folder without
`meta.json` counts as incomplete and is ignored, as are `.tmp-*` leftovers
(those can be deleted by hand).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

META_FILE = "meta.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")
# "step" and "folders" are added to what load_checkpoint returns; "meta" would clash with meta.json.
_RESERVED = {"step", "meta", "folders"}


def _step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def _fsync_dir(path: Path) -> None:
    # Makes renames/creations inside `path` durable; not supported everywhere.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"checkpoint entry names must be non-empty strings, got {name!r}")
    if name in _RESERVED:
        raise ValueError(f"checkpoint entry name {name!r} is reserved")
    if "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"checkpoint entry name {name!r} must be a plain file name")


def _complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / META_FILE).is_file():
            found.append((int(m.group(1)), p))
    found.sort()
    return found


def save_checkpoint(
    root: Path, step: int, state: dict[str, Any], *, keep_last: int | None = None,
    folders: dict[str, Callable[[Path], Any]] | None = None,
) -> Path:
    """Save `state` as checkpoint `root/step_{step:08d}` and return its path.

    `folders`: name -> a function that writes the folder of that name (workers writing their own shards
    into it, on storage they share with this process) and returns a small state, saved as the entry of
    the same name. Re-saving an existing step replaces it. With `keep_last`, only the newest
    `keep_last` complete checkpoints are kept, plus the one just written (so a save after resuming from
    an older step is never pruned by itself).
    """
    folders = folders or {}
    root = Path(root)
    step = int(step)
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
    for name in [*state, *folders]:
        _check_name(name)

    root.mkdir(parents=True, exist_ok=True)
    final = root / _step_dir_name(step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()

    writer = None
    try:
        state = dict(state)
        for name, write in folders.items():
            state[name] = write(tmp / name)
        for name, value in state.items():
            with open(tmp / f"{name}.pt", "wb") as f:
                writer = _RecordingFile(f)
                torch.save(value, writer)
                f.flush()
                os.fsync(f.fileno())
        meta = {"step": step, "entries": list(state), "folders": list(folders), "time": time.time()}
        with open(tmp / META_FILE, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
    except BaseException as e:
        written = _folder_bytes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception):
            cause = writer.error if writer is not None and writer.error is not None else e
            raise RuntimeError(f"failed to save checkpoint {final}: {cause}. {_space_report(root, written)}") from e
        raise

    old = None
    if final.exists():
        # POSIX cannot rename a directory onto a non-empty one: move the old copy
        # aside under a `.tmp-` name (ignored by readers), then swap in the new one.
        old = root / f".tmp-old-{final.name}-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError as e:
        if old is not None:
            os.replace(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"failed to move checkpoint into place at {final}: {e}") from e
    _fsync_dir(root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

    if keep_last is not None:
        complete = _complete_checkpoints(root)
        keep = {p for _, p in complete[-keep_last:]} | {final}
        for _, p in complete:
            if p not in keep:
                shutil.rmtree(p, ignore_errors=True)
    return final


class _RecordingFile:
    """A file whose first failed write is kept: torch.save reports one only as "unexpected pos"."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        self.f.flush()


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _space_report(root: Path, written: int) -> str:
    """Where things stand after a failed save: the checkpoint still intact, the space a save needs and has."""
    complete = _complete_checkpoints(root)
    free = shutil.disk_usage(root).free
    if not complete:
        return f"No earlier checkpoint; {written} bytes were written before the error, {free} bytes are free on {root}."
    last = complete[-1][1]
    return (f"The last complete checkpoint {last} is intact. It took {_folder_bytes(last)} bytes; this one had "
            f"written {written} when it failed; {free} bytes are free on {root}.")


def latest_checkpoint(root: Path) -> Path | None:
    """Newest complete `step_*` checkpoint under `root`, or None."""
    complete = _complete_checkpoints(Path(root))
    return complete[-1][1] if complete else None


def load_checkpoint(
    path: Path, names: list[str] | None = None, *, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Load entries (all by default) of a checkpoint folder, plus its `step` and the names of its `folders`."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RuntimeError(f"cannot read {meta_path}: {e}") from e

    entries = list(meta.get("entries", []))
    wanted = entries if names is None else list(names)
    missing = [n for n in wanted if n not in entries]
    if missing:
        raise KeyError(f"checkpoint {path} has no entries {missing}; it has {entries}")

    out: dict[str, Any] = {"step": int(meta["step"]), "folders": list(meta.get("folders", []))}
    for name in wanted:
        file = path / f"{name}.pt"
        try:
            # weights_only=False: these are files this framework wrote itself and
            # they hold non-tensor objects (RNG tuples, numpy arrays, dicts).
            out[name] = torch.load(file, map_location=map_location, weights_only=False)
        except Exception as e:
            raise RuntimeError(f"failed to load {file}: {e}") from e
    return out


def actor_shards(path: Path, state: dict[str, Any]) -> Path:
    """The folder of the actor's shards in checkpoint `path` (`state`: what load_checkpoint returned)."""
    if "actor" not in state["folders"]:
        raise ValueError(f"{path} holds the actor as one file (the format before sharded checkpoints): use it with "
                         "the version that wrote it")
    return Path(path) / "actor"


def read_shards(folder: Path) -> dict[str, Any]:
    """A torch.distributed.checkpoint folder (an actor's shards) as one plain state dict in this process:
    {"model": {name: tensor}, "optimizer": {...}}, for inspection and export."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from trainer.strategies.base import single_process_ok

    with tempfile.TemporaryDirectory(prefix="read-shards-") as tmp, single_process_ok():
        dcp_to_torch_save(str(folder), f"{tmp}/state.pt")
        return torch.load(f"{tmp}/state.pt", weights_only=False)


def read_deepspeed_weights(folder: Path) -> dict[str, torch.Tensor]:
    """A DeepSpeed ZeRO actor folder's weights as one float32 state dict in this process (DeepSpeed's own
    consolidation from the ranks' partitions), for export. With LoRA the frozen base is not in it."""
    import contextlib
    import io

    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from trainer.strategies.deepspeed_zero import TAG

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per file it reads
        return get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=TAG)


def capture_rng_state() -> dict[str, Any]:
    """RNG states of python `random`, numpy's global generator, torch CPU and CUDA."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`; keys that are absent are left alone."""
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "torch" in state:
        # set_rng_state needs a CPU ByteTensor, whatever map_location was used.
        torch.set_rng_state(torch.as_tensor(state["torch"]).cpu())
    cuda_states = state.get("cuda")
    if cuda_states is not None and torch.cuda.is_available():
        n = torch.cuda.device_count()
        if len(cuda_states) != n:
            warnings.warn(
                f"checkpoint has CUDA RNG states for {len(cuda_states)} devices, "
                f"this process sees {n}; restoring the first {min(n, len(cuda_states))}"
            )
        for i, s in enumerate(cuda_states[:n]):
            torch.cuda.set_rng_state(torch.as_tensor(s).cpu(), i)


def resume_checkpoint(root: Path, mode: str) -> Path | None:
    """The checkpoint `trainer.resume` asks to continue from: `auto` the latest under `root` (None when
    there is none), `never` none (an error when `root` has one), else the path given."""
    found = latest_checkpoint(root)
    if mode == "never":
        if found is not None:
            raise FileExistsError(
                f"{root.parent} already holds checkpoint {found.name}; use trainer.resume=auto to continue it "
                "or trainer.output_dir=<new folder> for a fresh run"
            )
        return None
    if mode == "auto":
        return found
    path = Path(mode)
    if not (path / META_FILE).exists():
        raise FileNotFoundError(f"trainer.resume={mode!r}: no complete checkpoint there (meta.json missing)")
    return path
