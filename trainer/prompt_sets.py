"""Turn the `data` config into training and held-out prompt lists."""

from __future__ import annotations

from pathlib import Path

from data.schema import Sample
from data.sources import load_samples
from trainer.config import Config


def _synthetic(name: str, cfg: Config, image_dir: Path) -> tuple[list[Sample], list[Sample]]:
    from data import synthetic
    from data.arithmetic import chat_splits, make_splits
    from data.spatial_scenes import spatial_scenes

    scenes = cfg.data.scenes
    colours = list(scenes.colours) if scenes.colours is not None else None
    if name == "spatial_scenes":
        return spatial_scenes(cfg.data.num_train, cfg.data.num_eval, seed=cfg.trainer.seed, image_dir=image_dir,
                              colours=colours, distinct_colours=scenes.distinct_colours)
    if name == "math_choice_and_spatial":
        # M2-Reasoning's mix at tiny scale: text math and multiple choice, plus image scene questions, half each.
        n_train, n_eval = cfg.data.num_train, cfg.data.num_eval
        text_train, text_eval = synthetic.math_and_choice(n_train - n_train // 2, n_eval - n_eval // 2,
                                                          seed=cfg.trainer.seed)
        scene_train, scene_eval = spatial_scenes(n_train // 2, n_eval // 2, seed=cfg.trainer.seed, image_dir=image_dir,
                                                 colours=colours, distinct_colours=scenes.distinct_colours)
        return text_train + scene_train, text_eval + scene_eval

    generators = {
        "arithmetic": make_splits,
        "addition_chat": chat_splits,
        "multilingual_arithmetic": synthetic.multilingual_arithmetic,
        "rubric_short_answers": synthetic.rubric_short_answers,
        "math_and_choice": synthetic.math_and_choice,
    }
    if name not in generators:
        available = ", ".join([*generators, "spatial_scenes", "math_choice_and_spatial"])
        raise ValueError(f"data.train=synthetic:{name}: unknown generator; available: {available}")
    return generators[name](cfg.data.num_train, cfg.data.num_eval, seed=cfg.trainer.seed)


def load_source(path: str, cfg: Config, limit: int | None = None) -> list[Sample]:
    """The samples of one file or dataset source, through `data.preprocess` when set; at most `limit` rows."""
    if cfg.data.preprocess:
        from data.preprocess import load_dataset_samples

        return load_dataset_samples(cfg.data.preprocess, path, split=cfg.data.split, limit=limit)
    return load_samples(path, split=cfg.data.split, limit=limit)


def load_prompt_sets(cfg: Config, image_dir: Path | None = None) -> tuple[list[Sample], list[Sample]]:
    """Training and held-out samples; synthetic generators that render images write them under `image_dir`."""
    if cfg.data.train.startswith("synthetic:"):
        return _synthetic(cfg.data.train.split(":", 1)[1], cfg, image_dir or Path(cfg.trainer.output_dir) / "images")
    train = load_source(cfg.data.train, cfg)
    if cfg.data.eval:
        held_out = load_source(cfg.data.eval, cfg)
    else:
        # No held-out source: keep the last num_eval training rows out of training.
        if len(train) <= cfg.data.num_eval:
            raise ValueError(
                f"data.train has {len(train)} rows, not enough to hold out data.num_eval={cfg.data.num_eval}; "
                "set data.eval or lower data.num_eval"
            )
        train, held_out = train[: -cfg.data.num_eval], train[-cfg.data.num_eval :]
    return train, held_out
