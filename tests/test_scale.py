"""Weight sync memory against model size (bench/bench_sync_memory.py; bench/RESULTS.md has 25M-394M): 2 FSDP2
ranks over gloo send to an HF engine in buckets; the sending rank's extra memory stays at one bucket buffer
plus the tensor being gathered (twice: all-gather output and its copy), whatever the model's size, while a
whole-model gather grows with it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[1]


def test_bucketed_sync_memory_is_flat_in_model_size_and_the_full_gather_is_not(tmp_path):
    out = tmp_path / "rows.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_sync_memory.py"), "--sizes", "25,60",
                             "--bucket-mb", "64", "--no-checkpoints", "--json", str(out)],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [round(r["params_m"]) for r in rows] == [25, 59]
    margin_mb = 32  # Python, allocator and sampling slack
    for row in rows:
        assert row["engine_matches"], row
        bound = row["buffer_mb"] + 2 * row["largest_tensor_mb"] + margin_mb
        assert row["sync_new"]["extra_mb"] <= bound, (row["params_m"], row["sync_new"], bound)
        assert row["sync_old"]["extra_mb"] >= 0.9 * row["model_mb"], row
    new = [r["sync_new"]["extra_mb"] for r in rows]
    assert max(new) - min(new) <= margin_mb, f"the bucketed sync's memory grew with the model: {new}"
