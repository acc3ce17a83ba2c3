"""Kill a run mid-way, resume it, and get exactly what an uninterrupted run gets."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainer.checkpoint import latest_checkpoint, load_checkpoint, read_shards
import json

pytestmark = pytest.mark.slow

ARGS = [
    "recipe=quickstart", "engine.ray=false", "rollout.engine=hf", "trainer.total_steps=5", "trainer.save_every=1",
    "trainer.keep_last=10", "sft.steps=30", "sft.batch_size=16", "data.num_train=400", "data.num_eval=8",
    "data.prompts_per_step=8", "rollout.n=4", "rollout.max_new_tokens=24", "rollout.eval_max_new_tokens=24",
    "actor.mini_batch_size=16", "actor.micro_batch_size=8", "actor.lr=1e-3", "reward.num_workers=0",
    "tracking.wandb.mode=disabled", "tracking.console=false",
    "reward.tasks={default: [{name: format, weight: 0.5}, {name: boxed_answer, weight: 1.0}]}",
]


def run_trainer(out_dir: Path, *extra: str, kill_after_step: int | None = None) -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "trainer", *ARGS, f"trainer.output_dir={out_dir}", *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after_step is None:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        return proc.returncode
    marker = out_dir / "checkpoints" / f"step_{kill_after_step:08d}" / "meta.json"
    deadline = time.time() + 600
    while not marker.exists():
        assert proc.poll() is None, f"run ended before step {kill_after_step}: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode


def read_metrics(out_dir: Path) -> dict[int, dict]:
    """Every logged key per step, later lines overriding earlier ones (a resumed run re-logs)."""
    merged: dict[int, dict] = {}
    for line in (out_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        merged.setdefault(row["step"], {}).update(row)
    return merged


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = latest_checkpoint(out_dir / "checkpoints")
    state = load_checkpoint(ckpt)
    assert state["step"] == 5
    return read_shards(ckpt / "actor")["model"], state["sampler"]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    from trainer.__main__ import main

    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    # Only the killed run needs a process of its own; the other two run in this one (no second import of torch).
    assert main([*ARGS, f"trainer.output_dir={straight}"]) == 0
    assert run_trainer(interrupted, kill_after_step=2) == -signal.SIGKILL
    killed_at = load_checkpoint(latest_checkpoint(interrupted / "checkpoints"))["step"]
    assert 2 <= killed_at < 5, "the kill should land mid-run"
    assert main([*ARGS, f"trainer.output_dir={interrupted}", "trainer.resume=auto"]) == 0

    weights_a, sampler_a = final_weights(straight)
    weights_b, sampler_b = final_weights(interrupted)
    assert sampler_a == sampler_b
    for name, tensor in weights_a.items():
        assert torch.equal(tensor, weights_b[name]), f"{name} differs after resume"
    metrics_a, metrics_b = read_metrics(straight), read_metrics(interrupted)
    assert sorted(metrics_a) == sorted(metrics_b) == [0, 1, 2, 3, 4, 5]
    for step in range(1, 6):
        for key in ("reward/mean", "response_len/mean", "actor/policy_loss"):
            assert metrics_a[step][key] == metrics_b[step][key], (step, key)
    # Training went on after the first checkpoint: weights at step 1 and step 5 differ.
    first_weights = read_shards(sorted((straight / "checkpoints").iterdir())[0] / "actor")["model"]
    assert any(not torch.equal(first_weights[k], weights_a[k]) for k in weights_a)


def test_resume_never_refuses_an_existing_run(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "step_00000001").mkdir(parents=True)
    (out / "checkpoints" / "step_00000001" / "meta.json").write_text('{"step": 1}')
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "trainer", *ARGS, f"trainer.output_dir={out}", "trainer.resume=never"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "already holds checkpoint step_00000001" in result.stderr



SHARDED = [
    "engine.ray=true", "rollout.engine=hf", "actor.strategy=fsdp2", "resources.actor.num_cpus=0.5",
    "resources.rollout.num_cpus=0.5", "sft.steps=0", "data.num_train=64", "data.num_eval=4", "data.prompts_per_step=4",
    "rollout.n=4", "rollout.max_new_tokens=8", "actor.mini_batch_size=16", "actor.micro_batch_size=8", "actor.lr=1e-3",
    "reward.num_workers=0", "tracking.wandb.mode=disabled", "tracking.console=false",
    # Reward by length: random-init groups always vary, so every step moves the weights.
    "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.1}]}",
]


def test_sharded_checkpoint_resumes_on_new_workers_and_onto_one_rank(tmp_path):
    """Two FSDP2 ranks write their own shards at step 2; new workers restored from the folder reach what the
    first run reached at step 4, on two ranks exactly, on one rank (torch.distributed.checkpoint reshards)
    to float rounding. (The kill itself: test_killed_run_resumes_to_the_same_result.)"""
    from trainer.loop import Trainer
    from trainer.recipe_config import compose_config

    def run(out: Path, ranks: int, resume_from: Path | None = None):
        trainer = Trainer(compose_config([f"trainer.output_dir={out}", *SHARDED, f"resources.actor.count={ranks}"]))
        try:
            trainer.start_workers(trainer.base_model_path)
            first = 0 if resume_from is None else trainer.restore(resume_from)[0]
            metrics = {}
            for step in range(first, 4):
                if step == 2 and resume_from is None:
                    trainer.save(2, {})
                metrics[step] = trainer.step(step)
            return trainer.workers.actor.call("weights")[0], metrics
        finally:
            trainer.close()

    weights_a, metrics_a = run(tmp_path / "a", 2)
    checkpoint = tmp_path / "a" / "checkpoints" / "step_00000002"
    assert sorted(p.name for p in (checkpoint / "actor").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    at_step_2 = read_shards(checkpoint / "actor")["model"]
    assert any(not torch.equal(weights_a[k], at_step_2[k]) for k in weights_a), "steps 2-3 did not move the weights"
    # On demand, the same checkpoint as a Hugging Face folder.
    from trainer.export_command import main as export
    from trainer.modeling import load_causal_lm

    assert export([str(checkpoint), str(tmp_path / "exported")]) == 0
    exported = load_causal_lm(str(tmp_path / "exported")).state_dict()
    assert all(torch.equal(exported[k], v) for k, v in at_step_2.items())
    assert (tmp_path / "exported" / "tokenizer.json").is_file()
    weights_b, metrics_b = run(tmp_path / "b", 2, resume_from=checkpoint)
    weights_c, metrics_c = run(tmp_path / "c", 1, resume_from=checkpoint)
    for name, tensor in weights_a.items():
        assert torch.equal(tensor, weights_b[name]), f"{name} differs after resume"
        # One rank sums the gradient in another order than two: equal to float rounding.
        assert torch.allclose(tensor, weights_c[name], atol=1e-5, rtol=0), f"{name} differs after resume on one rank"
    for step in (2, 3):
        for key in ("reward/mean", "response_len/mean", "actor/policy_loss"):
            assert metrics_a[step][key] == metrics_b[step][key], (step, key)
        assert metrics_c[step]["reward/mean"] == pytest.approx(metrics_a[step]["reward/mean"], abs=1e-6)


ASYNC = [
    # In-process (engine.ray=false): the collection ahead runs on a thread beside the update, as with Ray workers.
    "recipe=quickstart", "engine.ray=false", "rollout.engine=hf", "rollout.async_steps=1", "sft.steps=0",
    "data.num_train=64", "data.num_eval=4", "data.prompts_per_step=4",
    "rollout.n=4", "rollout.max_new_tokens=8", "rollout.eval_max_new_tokens=8", "actor.mini_batch_size=16",
    "actor.micro_batch_size=16", "actor.lr=1e-3", "reward.num_workers=0", "tracking.wandb.mode=disabled",
    "tracking.console=false", "trainer.total_steps=4", "trainer.save_every=1", "trainer.keep_last=10",
    "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.1}]}",
]


def test_killed_async_run_resumes_to_the_same_result(tmp_path):
    """rollout.async_steps=1: a checkpoint holds the next step's rollouts, generated with weights it no longer
    has; killed after step 2 and resumed, the run ends where the uninterrupted one ends, bit for bit."""
    def run(out: Path, *extra: str, kill_after_step: int | None = None) -> subprocess.Popen:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.Popen([sys.executable, "-m", "trainer", *ASYNC, f"trainer.output_dir={out}", *extra],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        marker = out / "checkpoints" / f"step_{kill_after_step or 0:08d}" / "meta.json"
        deadline = time.time() + 600
        while kill_after_step is not None and not marker.exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        if kill_after_step is not None:
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == (-signal.SIGKILL if kill_after_step else 0), err[-3000:]
        return proc

    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run(straight)
    run(interrupted, kill_after_step=2)
    killed_at = load_checkpoint(latest_checkpoint(interrupted / "checkpoints"))["step"]
    assert 2 <= killed_at < 4
    assert load_checkpoint(latest_checkpoint(interrupted / "checkpoints"))["rollouts_ahead"] is not None
    run(interrupted, "trainer.resume=auto")

    def final(out: Path):
        ckpt = latest_checkpoint(out / "checkpoints")
        return read_shards(ckpt / "actor")["model"], load_checkpoint(ckpt)

    (weights_a, state_a), (weights_b, state_b) = final(straight), final(interrupted)
    assert state_a["step"] == state_b["step"] == 4 and state_a["sampler"] == state_b["sampler"]
    for name, tensor in weights_a.items():
        assert torch.equal(tensor, weights_b[name]), f"{name} differs after resume"
    metrics_a, metrics_b = read_metrics(straight), read_metrics(interrupted)
    for step in range(1, 5):
        for key in ("reward/mean", "response_len/mean", "actor/policy_loss", "async/staleness", "actor/mismatch/kl"):
            assert metrics_a[step].get(key) == metrics_b[step].get(key), (step, key)
    # Steps 2-4 trained on batches one update stale, with the stale part weighed by correction.
    assert [metrics_a[s]["async/staleness"] for s in range(1, 5)] == [0.0, 1.0, 1.0, 1.0]
    assert all(metrics_a[s]["actor/mismatch/kl"] > 0 for s in range(2, 5))
