"""Turn a data source into a list of `Sample`s.

A source is one of:

- a `.jsonl` / `.json` file: one JSON object per line (blank lines skipped);
- a `.parquet` file;
- a local folder: a `save_to_disk` folder, or data files that `datasets.load_dataset` understands;
- a dataset name on the Hugging Face Hub (needs the network, or a cached copy);
- a spec dict `{"path": ..., "split": ..., "task": ..., "limit": ...}`, where `task` replaces
  the task of every sample (for datasets without a `task` column).

Every schema error names where the row came from: `file:line` for JSONL,
`file:row N (0-based)` for Parquet, `path[split] row N (0-based)` for `datasets`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from data.schema import Sample, SampleError, sample_from_row

JSONL_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
SPEC_KEYS = ("path", "split", "task", "limit")
# Files that mark a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.
_SAVED_MARKERS = ("state.json", "dataset_info.json", "dataset_dict.json")

Rows = Iterator[tuple[str, dict[str, Any]]]


class SourceError(RuntimeError):
    """A source that could not be opened at all (as opposed to one bad row)."""


def load_samples(
    path: str | Path | Mapping[str, Any], *, split: str = "train", limit: int | None = None
) -> list[Sample]:
    """Load and validate every row of a source (see the module docstring); at most `limit` rows."""
    task = None
    if isinstance(path, Mapping):
        unknown = sorted(set(path) - set(SPEC_KEYS))
        if unknown or "path" not in path:
            raise ValueError(f"source spec needs 'path' and only keys {SPEC_KEYS}; got {sorted(path)}")
        split, limit, task = path.get("split", split), path.get("limit", limit), path.get("task")
        path = path["path"]
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    samples = []
    for where, row in itertools.islice(open_rows(path, split), limit):
        if task is not None:
            # Through the row, so the schema still checks the task name.
            row = {**row, "task": task}
        samples.append(sample_from_row(row, where))
    return samples


def save_jsonl(samples: Iterable[Sample], path: str | Path) -> Path:
    """Write samples as JSONL rows that `load_samples` reads back unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps(sample.to_dict(), ensure_ascii=False) + "\n")
    return path


def open_rows(source: str | Path, split: str) -> Rows:
    """`(where, raw row)` for every row of a file, folder or hub source, before any schema check."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _dataset_rows(str(path), split, local=True)
    suffix = path.suffix.lower()
    looks_like_file = suffix in JSONL_SUFFIXES + PARQUET_SUFFIXES or path.is_absolute() or str(source).startswith(".")
    if path.is_file():
        if suffix in JSONL_SUFFIXES:
            return jsonl_rows(path)
        if suffix in PARQUET_SUFFIXES:
            return _parquet_rows(path)
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json, .parquet or a dataset folder")
    if looks_like_file:
        raise FileNotFoundError(f"data file not found: {path}")
    return _dataset_rows(str(source), split, local=False)


def jsonl_rows(path: str | Path) -> Rows:
    """`("file:line", parsed JSON)` for every non-blank line; invalid JSON is a SampleError naming file and line."""
    path = Path(path)
    # utf-8-sig: a byte-order mark would otherwise make line 1 invalid JSON.
    with path.open(encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line.rstrip())  # so the column points into this line
            except json.JSONDecodeError as e:
                raise SampleError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from e
            yield where, row


def _parquet_rows(path: Path) -> Rows:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    index = 0
    for batch in parquet.iter_batches():
        for row in batch.to_pylist():
            yield f"{path}:row {index} (0-based)", _drop_nulls(row)
            index += 1


def _dataset_rows(name: str, split: str, *, local: bool) -> Rows:
    import datasets  # heavy import, only paid when a folder or hub name is used

    if local and any((Path(name) / marker).is_file() for marker in _SAVED_MARKERS):
        dataset = datasets.load_from_disk(name)
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                raise SourceError(f"{name}: no split {split!r}; it has {sorted(dataset)}")
            dataset = dataset[split]
    elif local:
        dataset = datasets.load_dataset(name, split=split)
    else:
        try:
            dataset = datasets.load_dataset(name, split=split)
        except Exception as e:
            raise SourceError(
                f"could not load {name!r} (split {split!r}): it is not a local file or folder, and loading it "
                f"as a Hub dataset failed with {type(e).__name__}: {e}. Offline runs (HF_HUB_OFFLINE=1) need a "
                "local copy: pass the path of its data files or of a save_to_disk folder."
            ) from e
    return ((f"{name}[{split}] row {i} (0-based)", _drop_nulls(row)) for i, row in enumerate(dataset))


def _drop_nulls(row: dict[str, Any]) -> dict[str, Any]:
    # Columnar formats give every row every column, null where a row lacked it; treat null as
    # absent so schema defaults apply (a null `task` would otherwise be rejected).
    row = {key: value for key, value in row.items() if value is not None}
    if isinstance(row.get("metadata"), dict):
        row["metadata"] = {key: value for key, value in row["metadata"].items() if value is not None}
    return row
