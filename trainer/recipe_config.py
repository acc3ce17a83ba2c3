"""Build the run's `Config` from `recipe=NAME key=value ...` with Hydra, with errors that say what exists."""

from __future__ import annotations

import difflib
from dataclasses import asdict, fields, is_dataclass

from omegaconf import OmegaConf

from recipes import RECIPES_DIR
from trainer.config import Config


class ConfigError(ValueError):
    pass


# Free-form mappings: an override replaces the whole value instead of merging into it, so
# `reward.tasks={math: [...]}` means exactly that mix (Hydra would refuse new keys in a struct node).
REPLACED_WHOLE = (
    "reward.tasks", "reward.group_transforms", "reward.weighting.params", "algorithm.advantage_params", "algorithm.policy_loss_params", "stages",
    "rollout.mode_prefixes", "data.task_weights", "reward.correct_at", "data.apply_chat_template_kwargs",
)


def available_recipes() -> list[str]:
    return sorted(p.stem for p in (RECIPES_DIR / "recipe").glob("*.yaml"))


def available_groups() -> dict[str, list[str]]:
    """Config groups other than `recipe` and `presets`, with their options."""
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(RECIPES_DIR.iterdir())
        if d.is_dir() and d.name not in ("recipe", "presets", "__pycache__")
    }


def available_presets(recipe: str) -> list[str]:
    """Presets of a recipe: recipes/presets/<recipe>_<preset>.yaml."""
    prefix = f"{recipe}_"
    return sorted(p.stem[len(prefix):] for p in (RECIPES_DIR / "presets").glob(f"{prefix}*.yaml"))


def _keys_at(path: list[str]) -> tuple[str, list[str]]:
    """Walk the schema along `path`; return the deepest valid prefix and the keys under it."""
    node, prefix = Config, []
    for part in path:
        names = {f.name: f for f in fields(node)}
        if part not in names or not is_dataclass(names[part].default_factory() if callable(names[part].default_factory) else None):
            break
        node = names[part].default_factory().__class__
        prefix.append(part)
    return ".".join(prefix), [f.name for f in fields(node)]


def unknown_key_message(key: str) -> str | None:
    parts = key.lstrip("+~").split(".")
    prefix, keys = _keys_at(parts)
    depth = len(prefix.split(".")) if prefix else 0
    if depth < len(parts) and parts[depth] in keys:
        return None  # the key exists; the error is about its value
    wrong = parts[depth] if depth < len(parts) else key
    where = prefix or "the top level"
    close = difflib.get_close_matches(wrong, keys, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown config key {key!r}: {wrong!r} is not under {where}. Keys there: {', '.join(keys)}.{hint}"


def _replace_whole(composed, overrides: list[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        value = override.value()
        if not isinstance(value, dict):
            raise ConfigError(f"{override.key_or_group} must be a mapping, got {override.input_line!r}")
        OmegaConf.update(composed, override.key_or_group, value, merge=False, force_add=True)


def compose_config(overrides: list[str]) -> Config:
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException, MissingConfigException

    ConfigStore.instance().store(name="base_config", node=Config)
    recipe, preset = "quickstart", None
    for item in overrides:
        if item.startswith("recipe="):
            recipe = item.split("=", 1)[1]
        if item.startswith("preset="):
            preset = item.split("=", 1)[1]
    if recipe not in available_recipes():
        raise ConfigError(f"unknown recipe {recipe!r}; available recipes: {', '.join(available_recipes())}")
    overrides = [o for o in overrides if not o.startswith("preset=")]
    if preset is not None:
        if preset not in available_presets(recipe):
            known = ", ".join(available_presets(recipe)) or "none"
            raise ConfigError(f"recipe {recipe!r} has no preset {preset!r}; its presets: {known}")
        # Appended after the recipe in the defaults list, so the preset overrides it and the CLI overrides both.
        overrides.append(f"+presets={recipe}_{preset}")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key = item.split("=", 1)[0]
        if key in ("recipe", "+presets") or key.lstrip("+~") in available_groups():
            continue
        message = unknown_key_message(key)
        if message:
            raise ConfigError(message)
    whole = [o for o in overrides if o.split("=", 1)[0] in REPLACED_WHOLE]
    merged = [o for o in overrides if o not in whole]
    try:
        with initialize_config_dir(config_dir=str(RECIPES_DIR), version_base=None):
            composed = compose(config_name="config", overrides=merged)
        _replace_whole(composed, whole)
    except MissingConfigException as error:
        groups = "; ".join(f"{g}: {', '.join(o)}" for g, o in available_groups().items())
        raise ConfigError(f"{error}\nAvailable: recipe: {', '.join(available_recipes())}; {groups}") from None
    except HydraException as error:
        cause = error.__cause__ or error
        raise ConfigError(omegaconf_line(cause) if hasattr(cause, "full_key") else f"{error}: {cause}") from None
    composed.recipe_name = recipe
    composed.preset = preset
    try:
        return OmegaConf.to_object(composed)
    except Exception as error:  # omegaconf validation errors name the key
        raise ConfigError(f"invalid config for recipe {recipe!r}: {omegaconf_line(error)}") from None


def config_yaml(cfg: Config) -> str:
    """The resolved config as YAML (`--cfg`, and `config.yaml` in every run folder)."""
    return OmegaConf.to_yaml(OmegaConf.create(asdict(cfg)))


def omegaconf_line(error: Exception) -> str:
    """An OmegaConf error as one line, `key: what is wrong`, without its type-internals lines."""
    key = getattr(error, "full_key", None)
    first = (getattr(error, "msg", None) or str(error)).strip().splitlines()[0]
    return f"{key}: {first}" if key else first
