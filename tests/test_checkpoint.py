import json
import random

import numpy as np
import pytest
import torch

from trainer.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # One step so the optimizer has per-parameter state (exp_avg, ...) to save.
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip(tmp_path):
    model, opt = _model_and_optimizer()
    extra = {"consumed_samples": 1234, "name": "run-a", "history": [1.5, 2.5]}
    path = save_checkpoint(
        tmp_path, 7, {"model": model.state_dict(), "optimizer": opt.state_dict(), "trainer": extra}
    )
    assert path == tmp_path / "step_00000007"
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.pt", "optimizer.pt", "trainer.pt"]
    meta = json.loads((path / "meta.json").read_text())
    assert meta["step"] == 7 and meta["entries"] == ["model", "optimizer", "trainer"]

    loaded = load_checkpoint(path)
    assert loaded["step"] == 7
    assert loaded["trainer"] == extra
    for k, v in model.state_dict().items():
        assert torch.equal(loaded["model"][k], v)

    model2 = torch.nn.Linear(4, 3)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    model2.load_state_dict(loaded["model"])
    opt2.load_state_dict(loaded["optimizer"])
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for i in s1:
        assert torch.equal(s1[i]["exp_avg"], s2[i]["exp_avg"])
        assert torch.equal(s1[i]["exp_avg_sq"], s2[i]["exp_avg_sq"])
        assert float(s1[i]["step"]) == float(s2[i]["step"]) == 1.0

    only = load_checkpoint(path, ["trainer"])
    assert set(only) == {"step", "folders", "trainer"}


def test_errors_name_the_path(tmp_path):
    path = save_checkpoint(tmp_path, 1, {"a": 1})
    with pytest.raises(KeyError, match="step_00000001"):
        load_checkpoint(path, ["missing"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path, 2, {"step": 3})


def test_latest_ignores_incomplete(tmp_path):
    assert latest_checkpoint(tmp_path / "absent") is None
    save_checkpoint(tmp_path, 5, {"x": 5})
    # A crashed save leaves a temp folder; a hand-made folder may lack meta.json.
    (tmp_path / ".tmp-step_00000009-123").mkdir()
    (tmp_path / ".tmp-step_00000009-123" / "x.pt").write_bytes(b"partial")
    (tmp_path / "step_00000008").mkdir()
    (tmp_path / "step_00000008" / "x.pt").write_bytes(b"partial")
    latest = latest_checkpoint(tmp_path)
    assert latest == tmp_path / "step_00000005"
    assert load_checkpoint(latest) == {"step": 5, "folders": [], "x": 5}


def test_keep_last_prunes_oldest(tmp_path):
    for step in [1, 2, 3, 4, 5]:
        save_checkpoint(tmp_path, step, {"v": step}, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000004", "step_00000005"]
    # Numeric, not lexical, order decides which are newest.
    save_checkpoint(tmp_path, 10, {"v": 10}, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000005", "step_00000010"]


def test_resave_same_step_replaces(tmp_path):
    save_checkpoint(tmp_path, 3, {"a": 1, "old_only": 2})
    path = save_checkpoint(tmp_path, 3, {"a": 10})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000003"]
    assert sorted(p.name for p in path.iterdir()) == ["a.pt", "meta.json"]
    assert load_checkpoint(path) == {"step": 3, "folders": [], "a": 10}


def test_rng_round_trip_through_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint(tmp_path, 1, {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())

    # Disturb every generator, then restore from disk.
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert random.random() != expected[0]
    restore_rng_state(load_checkpoint(latest_checkpoint(tmp_path))["rng"])
    got = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    assert got == expected


FILE_LIMIT_SCRIPT = """
import resource, signal, sys, torch
from trainer.checkpoint import save_checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
root = sys.argv[1]
save_checkpoint(root, 1, {"w": torch.zeros(1000)}, keep_last=1)  # about 4 kB
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # no file may grow past 20 kB from here on
try:
    save_checkpoint(root, 2, {"w": torch.zeros(100_000)}, keep_last=1)  # 400 kB: the write fails midway
except RuntimeError as error:
    print(error)
"""


def test_a_write_error_keeps_the_last_checkpoint_and_says_what_space_is_needed(tmp_path):
    # A real failing write: the OS refuses to grow a file past RLIMIT_FSIZE (as a full disk refuses a block).
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "ckpt"
    out = subprocess.run([sys.executable, "-c", FILE_LIMIT_SCRIPT, str(root)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0, out.stderr
    message = out.stdout
    assert f"failed to save checkpoint {root / 'step_00000002'}" in message and "File too large" in message
    assert f"The last complete checkpoint {root / 'step_00000001'} is intact" in message
    assert "this one had written 20000 when it failed" in message and f"bytes are free on {root}" in message
    assert sorted(p.name for p in root.iterdir()) == ["step_00000001"]  # no partial folder, nothing pruned
    assert load_checkpoint(latest_checkpoint(root))["w"].shape == (1000,)


def test_export_names_what_a_checkpoint_lacks(tmp_path, capsys):
    from trainer.export_command import main as export

    save_checkpoint(tmp_path, 1, {"actor": {"strategy": {}}})  # the single-file format
    assert export([str(tmp_path / "step_00000001")]) == 2
    assert "holds the actor as one file" in capsys.readouterr().err
    save_checkpoint(tmp_path, 2, {"sampler": {}}, folders={"actor": lambda folder: {"strategy": "fsdp2"}})
    assert export([str(tmp_path / "step_00000002")]) == 2
    assert "does not name the folder its run started from" in capsys.readouterr().err
    assert export([]) == 2 and "usage: python -m trainer export" in capsys.readouterr().out
