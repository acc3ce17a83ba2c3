"""`python -m trainer [recipe=NAME] [key=value ...]`: train with a Hydra recipe (default: quickstart).

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
        from dataclasses import asdict

        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(OmegaConf.create(asdict(cfg))))
        return 0
    from trainer.hub import ModelNotFoundError, apply_offline_mode

    # Online unless asked: model.offline=true switches the hub off before anything calls it.
    apply_offline_mode(cfg.model.offline)
    if check_only:
        from trainer.check import run_check

        return run_check(cfg)
    from trainer.loop import train
    from trainer.stages.runner import run_stages

    try:
        run_stages(cfg) if cfg.stages else train(cfg)
    except (ModelNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
