"""Test-only rewards; worker processes import this module by name (``tests.reward_fixtures``)."""

from __future__ import annotations

import os
import signal
import time

from rewards.base import RewardOutput, register_reward


@register_reward("fixture_raise")
def fixture_raise(completion, sample, *, message: str = "boom"):
    raise RuntimeError(message)


@register_reward("fixture_sleep")
def fixture_sleep(completion, sample, *, seconds: float = 10.0):
    """Sleeps in Python: the worker's SIGALRM limit interrupts it."""
    time.sleep(seconds)
    return 1.0


@register_reward("fixture_hang")
def fixture_hang(completion, sample, *, seconds: float = 30.0):
    """Hangs where signals cannot reach, like a long C call: only killing the process stops it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    return 1.0


@register_reward("fixture_power")
def fixture_power(completion, sample):
    """A real C-level hang: CPython's big-integer power does not check for signals."""
    return float(pow(9, 9 ** 9) % 7)


@register_reward("fixture_echo")
def fixture_echo(completion, sample, *, scale: float = 1.0):
    """Score = the completion read as a number, times ``scale``; details carry the worker's pid."""
    return RewardOutput(float(completion) * scale, {"pid": os.getpid()})


@register_reward("fixture_len")
def fixture_len(completion, sample):
    return float(len(completion))


@register_reward("fixture_exit")
def fixture_exit(completion, sample):
    """The worker process dies mid-call (like a segfault or an OOM kill)."""
    os._exit(3)


@register_reward("fixture_len_if_even")
def fixture_len_if_even(completion, sample):
    """Length for prompts whose first digit is even, else 0: odd prompts' groups have no variance."""
    return float(len(completion)) if int(sample.prompt[0]) % 2 == 0 else 0.0


CALLS = {"kill": 0}


@register_reward("fixture_kill_worker")
def fixture_kill_worker(completion, sample, *, kills: dict | None = None):
    """On this process's call number k (0-based) of `kills` ({"at<k>": Ray class name}), SIGKILL that Ray worker
    process (`ray::ActorWorker`, `ray::RolloutWorker`, ...) of this process's own Ray, as an OOM kill
    would, while the controller is scoring. Scores 0."""
    import signal
    from pathlib import Path

    def parent(pid: int) -> int:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])

    def ours(pid: int) -> bool:  # a descendant of this process (its local Ray: raylet, then the worker)
        for _ in range(4):
            pid = parent(pid)
            if pid == os.getpid():
                return True
        return False

    call = CALLS["kill"]
    CALLS["kill"] += 1
    target = (kills or {}).get(f"at{call}")
    if target:
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(f"ray::{target}".encode()) \
                        and ours(int(proc.name)):
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                continue
    return 0.0
