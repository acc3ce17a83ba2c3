"""Submit a training run to a Ray cluster as a Ray Job, and follow, query or stop it.

The job runs `python -m trainer ray.address=auto <overrides>` on the cluster, with this
checkout as its working directory. Environment variables named with `env` are copied from the
submitting shell into the job; only their names are ever printed.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Passed through when set in the submitting shell; values never printed.
DEFAULT_ENV = ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_BASE_URL", "HF_TOKEN", "HF_ENDPOINT",
               "HF_HUB_OFFLINE", "JUDGE_API_KEY")
# Never uploaded: environments, outputs and caches can be gigabytes.
WORKING_DIR_EXCLUDES = [
    ".venv", ".git", "outputs", "wandb", "**/__pycache__", "*.egg-info", ".pytest_cache", "bench/out",
]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class LaunchError(RuntimeError):
    pass


def project_root() -> Path:
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").exists() or not (root / "trainer").is_dir():
        raise LaunchError(f"{root} is not a checkout of this project (no pyproject.toml + trainer/): "
                          "submit from a source checkout so the job can carry it as its working dir")
    return root


def resolve_address(address: str | None) -> str:
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_ADDRESS
    if "://" not in address:
        address = f"http://{address}"
    return address


def enable_token_auth_if_available() -> bool:
    """Use Ray's token authentication when a token is at hand and the mode is not set explicitly.

    Ray 2.60 clusters started with `ray start` require a token; the Jobs client only sends it when
    RAY_AUTH_MODE=token, so set that when RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token exists.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.lower() == "token"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or Path(path).is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        return True
    return False


def client(address: str | None):
    # Ray reads RAY_AUTH_MODE once, when it is first imported.
    enable_token_auth_if_available()
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    try:
        return JobSubmissionClient(url)
    except Exception as error:  # connection refused, auth failure, wrong port: all surface here
        raise LaunchError(f"cannot reach the Ray Jobs API at {url}: {error}") from None


def pinned_requirements() -> list[str]:
    """The project's direct dependencies (and torch, which pyproject leaves to the machine) pinned at
    the versions installed here, extras kept."""
    import re

    pins = []
    requirements = [r for r in metadata.requires("reasoning-rl") or [] if "extra ==" not in r]
    for requirement in ["torch", *requirements]:
        match = re.match(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?", requirement)
        name, extras = match.group(1), match.group(2) or ""
        try:
            pins.append(f"{name}{extras}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise LaunchError(f"requirement {name!r} is not installed here, so it cannot be pinned") from None
    return pins


@dataclass
class JobSpec:
    overrides: list[str]
    env_names: list[str] = field(default_factory=list)
    python: str = "python"
    requirements: str = "none"
    "none (the cluster's own environment), pinned (this machine's versions of the direct deps) or a file"
    entrypoint_num_cpus: float | None = None
    submission_id: str | None = None

    def entrypoint(self) -> str:
        args = ["-m", "trainer", "ray.address=auto", *self.overrides]
        return " ".join([shlex.quote(self.python), *map(shlex.quote, args)])

    def passed_env(self) -> dict[str, str]:
        names = list(dict.fromkeys([*DEFAULT_ENV, *self.env_names]))
        missing = [n for n in self.env_names if n not in os.environ]
        if missing:
            raise LaunchError(f"--env names variables that are not set here: {', '.join(missing)}")
        return {n: os.environ[n] for n in names if n in os.environ}

    def runtime_env(self) -> dict:
        env = {"working_dir": str(project_root()), "excludes": list(WORKING_DIR_EXCLUDES),
               "env_vars": {"TOKENIZERS_PARALLELISM": "false", **self.passed_env()}}
        if self.requirements == "pinned":
            env["pip"] = pinned_requirements()
        elif self.requirements != "none":
            path = Path(self.requirements)
            if not path.is_file():
                raise LaunchError(f"--requirements {self.requirements}: no such file (or use 'none' or 'pinned')")
            env["pip"] = [line.strip() for line in path.read_text().splitlines()
                          if line.strip() and not line.lstrip().startswith("#")]
        return env


def validate_overrides(overrides: list[str]) -> None:
    """Compose the config here first, so a typo fails before anything is uploaded."""
    from trainer.recipe_config import ConfigError, compose_config

    try:
        compose_config(overrides)
    except ConfigError as error:
        raise LaunchError(str(error)) from None


def submit(spec: JobSpec, address: str | None) -> str:
    validate_overrides(spec.overrides)
    runtime_env = spec.runtime_env()
    return _ask(address, f"job submission to {resolve_address(address)} failed", lambda jobs: jobs.submit_job(
        entrypoint=spec.entrypoint(), runtime_env=runtime_env, submission_id=spec.submission_id,
        entrypoint_num_cpus=spec.entrypoint_num_cpus, metadata={"launcher": "reasoning-rl"}))


AGENT_NOT_READY = "No available agent"  # the head's job agent is still starting (right after `ray start`)


def _ask(address: str | None, failure: str, request, agent_wait_s: float = 60.0):
    """Run `request(client)`; an error from the cluster becomes a LaunchError that starts with `failure`.
    A head whose job agent is still starting is asked again for up to `agent_wait_s`."""
    jobs = client(address)
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return request(jobs)
        except Exception as error:
            if AGENT_NOT_READY in str(error) and time.monotonic() < deadline:
                time.sleep(2.0)
                continue
            raise LaunchError(f"{failure}: {error}") from None


def status(job_id: str, address: str | None) -> str:
    return _ask(address, f"no status for job {job_id!r}", lambda jobs: str(jobs.get_job_status(job_id).value))


def wait(job_id: str, address: str | None, timeout_s: float | None = None, poll_s: float = 2.0) -> str:
    """Block until the job ends; returns its final status."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        state = status(job_id, address)
        if state in TERMINAL:
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise LaunchError(f"job {job_id} still {state} after {timeout_s:.0f}s")
        time.sleep(poll_s)


def logs(job_id: str, address: str | None) -> str:
    return _ask(address, f"no logs for job {job_id!r}", lambda jobs: jobs.get_job_logs(job_id))


def follow(job_id: str, address: str | None, out=sys.stdout) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    import asyncio

    jobs = client(address)

    async def tail() -> None:
        async for chunk in jobs.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(tail())
    except Exception as error:
        raise LaunchError(f"lost the log stream of job {job_id!r}: {error}") from None
    return wait(job_id, address)


def stop(job_id: str, address: str | None) -> bool:
    return bool(_ask(address, f"cannot stop job {job_id!r}", lambda jobs: jobs.stop_job(job_id)))
