import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "rewards", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_list():
    proc = run("list")
    assert proc.returncode == 0, proc.stderr
    assert "boxed_answer: require_answer_tag=False" in proc.stdout
    assert "numeric: k=1.0, rel_eps=1e-09" in proc.stdout
    assert "format: mode='think_answer'" in proc.stdout
    assert "multiple_choice:" in proc.stdout


def test_score_single():
    proc = run("score", "--reward", "multiple_choice", "--completion", r"\boxed{Rome}", "--ground-truth", "C",
               "--field", 'choices=["Paris", "London", "Rome"]')
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["reward"] == "multiple_choice" and record["score"] == 1.0
    assert record["details"]["chosen"] == "C"


def test_score_jsonl(tmp_path):
    cases = tmp_path / "cases.jsonl"
    rows = [
        {"completion": r"\boxed{\frac{1}{2}}", "ground_truth": "0.5"},
        {"completion": r"\boxed{3} or \boxed{4}", "ground_truth": "3", "task": "math"},
        {"completion": r"<answer>\boxed{7}</answer>", "ground_truth": 7, "language": "en"},
    ]
    cases.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out.jsonl"
    proc = run("score", "--reward", "boxed_answer", "--input", str(cases), "--output", str(out),
               "--param", "require_answer_tag=false", "--param", "reject_hedging=true")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["score"] for r in records] == [1.0, 0.0, 1.0]
    assert records[1]["details"]["reason"].startswith("hedged")


def test_bad_line_and_bad_param(tmp_path):
    cases = tmp_path / "bad.jsonl"
    cases.write_text(json.dumps({"completion": "x", "ground_truth": "1"}) + "\n{not json\n")
    proc = run("score", "--reward", "boxed_answer", "--input", str(cases))
    assert proc.returncode == 2
    assert f"{cases}:2" in proc.stderr
    proc = run("score", "--reward", "boxed_answer", "--completion", "x", "--ground-truth", "1", "--param", "strict=1")
    assert proc.returncode == 2 and "no parameter" in proc.stderr
