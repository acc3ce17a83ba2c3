"""Validation up front: every bounded value and every type error is one line naming the key, before any
worker starts (issue: `rollout.n=0` used to start Ray and SFT; `actor.lr=abc` printed OmegaConf's internals)."""

from __future__ import annotations

import pytest

from trainer.__main__ import main
from trainer.config import RANGES, in_interval, range_problems, validate
from trainer.recipe_config import available_recipes, compose_config


def test_interval_bounds_by_hand():
    assert in_interval(1, "[1, inf)") and not in_interval(0, "[1, inf)")
    assert in_interval(1.0, "(0, 1]") and not in_interval(0.0, "(0, 1]") and not in_interval(1.5, "(0, 1]")
    assert in_interval(0.0, "[0, inf)") and not in_interval(-1e-9, "[0, inf)")


def test_every_range_names_a_key_of_the_schema_and_every_recipe_is_inside():
    for recipe in available_recipes():
        cfg = compose_config([f"recipe={recipe}"])
        assert range_problems(cfg) == [], recipe  # also walks every key: a typo in RANGES raises here
    assert len(RANGES) > 60


@pytest.mark.parametrize("override, line", [
    ("rollout.n=0", "rollout.n=0: expected a value in [1, inf)"),
    ("rollout.top_p=1.5", "rollout.top_p=1.5: expected a value in (0, 1]"),
    ("trainer.keep_last=0", "trainer.keep_last=0: expected a value in [1, inf)"),
    ("actor.lr=abc", "actor.lr: Value 'abc' of type 'str' could not be converted to Float"),
    ("rollout.n=[1,2]", "rollout.n: Value '[1, 2]' of type 'list' could not be converted to Integer"),
])
def test_bad_value_is_one_line_before_any_worker(tmp_path, capsys, override, line):
    import ray

    ray_before = ray.is_initialized()  # earlier tests in this process may have started one
    assert main([override, f"trainer.output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {line}\n"
    assert ray.is_initialized() == ray_before and not (tmp_path / "run").exists()


def test_several_bad_values_each_get_their_line():
    cfg = compose_config(["rollout.n=0", "actor.epochs=0"])
    with pytest.raises(ValueError) as error:
        validate(cfg)
    assert str(error.value).splitlines() == ["rollout.n=0: expected a value in [1, inf)",
                                             "actor.epochs=0: expected a value in [1, inf)"]
