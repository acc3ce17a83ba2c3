import json

import numpy as np
import pytest
import torch

from trainer.tracking import Tracker, read_metrics, resolve_wandb_mode


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)


def _lines(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_offline_run_and_resume(tmp_path):
    run_dir = tmp_path / "run"
    # "auto" with no API key in the environment must run offline.
    with Tracker(
        run_dir, project="test-proj", run_name="r1", config={"lr": 1e-6, "group": 8},
        wandb_mode="auto", total_steps=3,
    ) as tr:
        assert tr.wandb_mode == "offline"
        assert tr.resumed is False
        assert tr.wandb_run.config["lr"] == 1e-6 and tr.wandb_run.config["group"] == 8
        tr.log(1, {"reward/mean": 0.5, "loss": torch.tensor(1.25)})
        tr.log(2, {"reward/mean": np.float32(0.75), "kl": np.float64(0.125)})
        tr.print("a message")
    rows = _lines(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["reward/mean"] == 0.5 and rows[0]["loss"] == 1.25
    assert rows[1]["reward/mean"] == 0.75 and rows[1]["kl"] == 0.125
    assert all(isinstance(r["time"], float) for r in rows)

    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert run_id and tr.run_id == run_id
    first = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(first) == 1 and run_id in first[0].name
    assert (first[0] / f"run-{run_id}.wandb").is_file()

    # Restart from step 1: same W&B id, metrics file appended, last line per step wins.
    with Tracker(
        run_dir, project="test-proj", run_name="r1", config={"lr": 1e-6},
        wandb_mode="offline", console=False,
    ) as tr2:
        assert tr2.resumed is True and tr2.run_id == run_id
        assert tr2.wandb_run.id == run_id
        tr2.log(2, {"reward/mean": 0.9})
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    # W&B adds "-1" to the folder name when both starts fall in the same second.
    assert len(runs) == 2 and all(run_id in p.name for p in runs)
    assert all((p / f"run-{run_id}.wandb").is_file() for p in runs)
    assert [r["step"] for r in _lines(run_dir)] == [1, 2, 2]
    per_step = read_metrics(run_dir)
    assert per_step[1]["reward/mean"] == 0.5
    assert per_step[2]["reward/mean"] == 0.9 and "kl" not in per_step[2]


def test_disabled_creates_no_wandb_files(tmp_path):
    with Tracker(tmp_path, project="p", run_name="r", config={}, wandb_mode="disabled") as tr:
        tr.log(0, {"acc/mean": 1})
    assert not (tmp_path / "wandb").exists()
    assert not (tmp_path / "wandb_run_id.txt").exists()
    assert _lines(tmp_path)[0]["acc/mean"] == 1.0


def test_mode_resolution_and_bad_input(tmp_path):
    assert resolve_wandb_mode("auto", {}) == "offline"
    assert resolve_wandb_mode("auto", {"WANDB_API_KEY": "x"}) == "online"
    assert resolve_wandb_mode("disabled", {"WANDB_API_KEY": "x"}) == "disabled"
    with pytest.raises(ValueError, match="wandb_mode"):
        resolve_wandb_mode("sometimes")
    with Tracker(tmp_path, project="p", run_name="r", config={}, wandb_mode="disabled") as tr:
        with pytest.raises(TypeError, match="'text'"):
            tr.log(0, {"text": "hello"})
        with pytest.raises(TypeError, match="'vec'"):
            tr.log(0, {"vec": torch.ones(2)})


def test_sample_tables_go_to_jsonl_and_wandb(tmp_path):
    rows = [{"task": "math", "prompt": "1+1?", "completion": "\\boxed{2}", "reward": 1.0, "correct": True},
            {"task": "math", "prompt": "2+2?", "completion": "5 €", "reward": 0.0, "correct": False}]
    with Tracker(tmp_path, project="p", run_name="r", config={}, wandb_mode="offline", console=False) as tr:
        tr.log(10, {"reward/mean": 0.5})
        tr.log_samples(10, rows)
        tr.log_samples(11, [])  # nothing to record: no file lines, no table
    lines = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines == [{"step": 10, **rows[0]}, {"step": 10, **rows[1]}]
    tables = list((tmp_path / "wandb").glob("offline-run-*/files/media/table/samples_10_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["task", "prompt", "completion", "reward", "correct"]
    assert table["data"][1] == ["math", "2+2?", "5 €", 0.0, False]
