"""`python -m trainer [recipe=NAME] [key=value ...]`: train with a Hydra recipe (default: quickstart).

`python -m trainer eval [MODEL] [recipe=NAME] [key=value ...]` evaluates a model (trainer/eval_command.py);
`python -m trainer report RUN_DIR [RUN_DIR ...]` plots runs (trainer/report.py);
`python -m trainer export CHECKPOINT [OUT]` writes a checkpoint as a model folder (trainer/export_command.py).

Extra flags: `--cfg` prints the resolved config and exits; `--list` lists recipes; `--check` checks the
recipe in seconds (config, model folder, data, the first prompt as rollout renders it, rewards on a gold
response) without loading weights or starting workers, and exits 0 when fine, 2 with problems.
"""

from __future__ import annotations

import os
import sys

USAGE = __doc__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if argv[:1] == ["eval"]:
        from trainer.eval_command import main as evaluate

        return evaluate(argv[1:])
    if argv[:1] == ["export"]:
        from trainer.export_command import main as export

        return export(argv[1:])
    if argv[:1] == ["report"]:
        from trainer.report import main as report

        return report(argv[1:])
    from trainer.recipe_config import ConfigError, available_groups, available_recipes, compose_config

    if "-h" in argv or "--help" in argv:
        print(USAGE)
        print("recipes:", ", ".join(available_recipes()))
        return 0
    if "--list" in argv:
        print("recipes:", ", ".join(available_recipes()))
        for group, options in available_groups().items():
            print(f"{group}:", ", ".join(options))
        return 0
    print_only = "--cfg" in argv
    check_only = "--check" in argv
    overrides = [a for a in argv if a not in ("--cfg", "--check")]
    try:
        cfg = compose_config(overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if print_only:
        from trainer.recipe_config import config_yaml

        print(config_yaml(cfg))
        return 0
    from trainer.hub import ModelNotFoundError, apply_offline_mode

    # Online unless asked: model.offline=true switches the hub off before anything calls it.
    apply_offline_mode(cfg.model.offline)
    if check_only:
        from trainer.check import run_check

        return run_check(cfg)
    from pathlib import Path

    from trainer.config import validate
    from trainer.console import quiet, say
    from trainer.loop import train
    from trainer.mismatch import MismatchBudgetError
    from trainer.scoring import RewardFailureError
    from trainer.stages.runner import run_stages
    from trainer.workers.group import WorkerDiedError

    try:
        if not cfg.stages:  # a staged run checks every stage's config before its first stage instead
            validate(cfg)
        with quiet(Path(cfg.trainer.output_dir) / "logs", cfg.tracking.verbose) as log:
            if log is not None:
                say(f"[{cfg.recipe_name}] third-party output: {log} (tracking.verbose=true shows it here)")
            run_stages(cfg) if cfg.stages else train(cfg)
    except (ModelNotFoundError, FileExistsError, ValueError, FloatingPointError, RewardFailureError,
            MismatchBudgetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except WorkerDiedError as error:
        # The actor, or a role past trainer.max_worker_restarts: the checkpoints are intact, so resume.
        print(f"error: {error}\nresume from the last checkpoint with: {resume_command(overrides)}", file=sys.stderr)
        return 3
    return 0


def resume_command(overrides: list[str]) -> str:
    """The command that continues this run from its newest checkpoint (trainer.resume=auto)."""
    import shlex

    kept = [o for o in overrides if not o.startswith("trainer.resume=")] + ["trainer.resume=auto"]
    return " ".join(["python", "-m", "trainer", *map(shlex.quote, kept)])


if __name__ == "__main__":
    sys.exit(main())
