"""Experiment tracking: a local metrics file, Weights & Biases, and a console bar.

Every `Tracker.log(step, metrics)` call

* appends one JSON line `{"step": ..., "time": ..., **metrics}` to
  `run_dir/metrics.jsonl` (flushed at once, so a killed run keeps its history);
* logs the same numbers to W&B (unless `wandb_mode="disabled"`);
* advances a tqdm bar whose postfix shows a few key numbers.

Resuming: the W&B run id lives in `run_dir/wandb_run_id.txt`. A Tracker that
finds this file reuses the id, so a restarted job continues the same W&B run.
`metrics.jsonl` is append-only: after a resume from an earlier checkpoint it can
hold several lines for the same step. Readers should keep the LAST line per step
(`read_metrics` does this).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import string
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from trainer import console

WANDB_MODES = ("auto", "online", "offline", "disabled")
DEFAULT_CONSOLE_KEYS = ("reward/mean", "acc/mean", "response_len/mean", "time/step")
METRICS_FILE = "metrics.jsonl"
RUN_ID_FILE = "wandb_run_id.txt"
SAMPLES_FILE = "samples.jsonl"


def resolve_wandb_mode(mode: str, environ: Mapping[str, str] | None = None) -> str:
    """Map "auto" to "online" when an API key is configured, else "offline"."""
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb_mode must be one of {WANDB_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    env = os.environ if environ is None else environ
    # Only the presence of the key matters; its value is never read or shown.
    return "online" if env.get("WANDB_API_KEY") else "offline"


def _to_float(key: str, value: Any) -> float:
    # 0-d tensors and numpy scalars expose .item(); plain numbers pass through.
    if hasattr(value, "item"):
        try:
            value = value.item()
        except (ValueError, RuntimeError) as e:
            raise TypeError(f"metric {key!r} is not a scalar: {e}") from e
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__}") from e


def read_metric_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Every line of `run_dir/metrics.jsonl` in order (a truncated last line is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    with path.open() as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                # A run killed mid-write can leave a truncated last line.
                continue
    return rows


def read_metrics(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Metrics per step from `run_dir/metrics.jsonl`; the last line for a step wins."""
    return {int(row["step"]): row for row in read_metric_rows(run_dir)}


def _new_run_id() -> str:
    # Short lowercase id, valid as a W&B run id and in folder names.
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class Tracker:
    def __init__(
        self,
        run_dir: Path,
        *,
        project: str,
        run_name: str,
        config: dict,
        wandb_mode: str = "auto",
        tags: list[str] | None = None,
        console: bool = True,
        total_steps: int | None = None,
        console_keys: Sequence[str] = DEFAULT_CONSOLE_KEYS,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.wandb_mode = resolve_wandb_mode(wandb_mode)
        self.console = console
        self.total_steps = total_steps
        self.console_keys = tuple(console_keys)
        self.run_id: str | None = None
        self.resumed = False
        self._bar: tqdm | None = None
        self._finished = False

        self._metrics_f = (self.run_dir / METRICS_FILE).open("a", encoding="utf-8")

        self._wandb_run = None
        if self.wandb_mode != "disabled":
            try:
                self._wandb_run = self._init_wandb(project, run_name, config, tags)
            except BaseException:
                self._metrics_f.close()
                raise

    def _init_wandb(self, project: str, run_name: str, config: dict, tags: list[str] | None):
        import wandb  # imported lazily: disabled runs never pay for it

        id_file = self.run_dir / RUN_ID_FILE
        if id_file.exists():
            self.run_id = id_file.read_text().strip()
            self.resumed = bool(self.run_id)
        if not self.run_id:
            self.run_id = _new_run_id()
            # Written before init so a crash during init still resumes the same id.
            id_file.write_text(self.run_id + "\n")
        return wandb.init(
            project=project,
            name=run_name,
            config=config,
            tags=tags,
            dir=str(self.run_dir),
            mode=self.wandb_mode,
            id=self.run_id,
            resume="allow",
        )

    @property
    def wandb_run(self):
        """The live W&B run, or None when disabled or finished."""
        return self._wandb_run

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self._finished:
            raise RuntimeError(f"Tracker for {self.run_dir} is already finished")
        step = int(step)
        values = {str(k): _to_float(k, v) for k, v in metrics.items()}
        row = {"step": step, "time": time.time(), **values}
        # NaN/inf are kept (json writes NaN/Infinity; Python's json reads them back).
        self._metrics_f.write(json.dumps(row) + "\n")
        self._metrics_f.flush()

        if self._wandb_run is not None:
            self._wandb_run.log(values, step=step)

        if self.console:
            self._update_bar(step, values)

    def log_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        """Sample completions: appended to `run_dir/samples.jsonl` and logged as the W&B table `samples`."""
        if not rows:
            return
        with (self.run_dir / SAMPLES_FILE).open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({"step": int(step), **row}, ensure_ascii=False) + "\n")
        if self._wandb_run is not None:
            import wandb

            columns = list(rows[0])
            table = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])
            self._wandb_run.log({"samples": table}, step=int(step))

    def _update_bar(self, step: int, values: dict[str, float]) -> None:
        if self._bar is None:
            # Created on the first log so a resumed run starts the bar at its step.
            self._bar = tqdm(total=self.total_steps, initial=step, dynamic_ncols=True, desc="train",
                             file=console.stream())
        elif step > self._bar.n:
            self._bar.update(step - self._bar.n)
        postfix = {}
        for key in self.console_keys:
            if key in values:
                label = key.removesuffix("/mean")
                v = values[key]
                postfix[label] = f"{v:.4g}" if math.isfinite(v) else str(v)
        self._bar.set_postfix(postfix, refresh=True)

    def print(self, msg: str) -> None:
        """Write a line above the progress bar without breaking it."""
        console.say(msg)

    def finish(self, exit_code: int = 0) -> None:
        if self._finished:
            return
        self._finished = True
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._metrics_f.close()
        if self._wandb_run is not None:
            self._wandb_run.finish(exit_code=exit_code)
            self._wandb_run = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # A crash marks the W&B run as failed rather than finished.
        self.finish(exit_code=0 if exc_type is None else 1)
