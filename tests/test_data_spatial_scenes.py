"""Spatial scenes: answers re-derived from the PNG pixels alone, formats, rewards, splits, seeds."""

from __future__ import annotations

import collections
import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.schema import Sample
from data.spatial_scenes import FAMILIES, FAMILY_REWARDS, spatial_scenes
from rewards.base import call_reward, get_reward

CANVAS = 112
COLOUR_NAMES = ("red", "green", "blue", "yellow")
SHAPE_NAMES = ("circle", "square", "triangle")


# ---- reading a scene back from its pixels, without the generator's metadata ----


def colour_of(rgb: tuple[int, int, int]) -> str:
    """Name a pure colour by which channels are bright (independent of the generator's palette)."""
    bright = tuple(channel > 128 for channel in rgb)
    names = {(True, False, False): "red", (False, True, False): "green",
             (False, False, True): "blue", (True, True, False): "yellow"}
    assert bright in names, f"unexpected colour {rgb}"
    return names[bright]


def shape_of(fill: float) -> str:
    """Share of the box an object fills: square 1.0, circle ~0.785, upward triangle ~0.5."""
    if fill > 0.92:
        return "square"
    if fill > 0.66:
        return "circle"
    assert fill > 0.4, fill
    return "triangle"


class Found:
    def __init__(self, colour: str, pixels: list[tuple[int, int]]):
        xs = [x for x, _ in pixels]
        ys = [y for _, y in pixels]
        self.colour = colour
        self.area = len(pixels)
        self.box = (min(xs), min(ys), max(xs) + 1, max(ys) + 1)  # inclusive-exclusive
        width, height = self.box[2] - self.box[0], self.box[3] - self.box[1]
        self.box_area = width * height
        self.shape = shape_of(self.area / self.box_area)
        self.centre = ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def name(self) -> str:
        return f"the {self.colour} {self.shape}"


def components(path: str, canvas: int = CANVAS) -> list[Found]:
    """Objects in a PNG: 8-connected regions of one non-white colour (breadth-first flood fill)."""
    with Image.open(path) as image:
        assert image.mode == "RGB" and image.size == (canvas, canvas)
        pixels = np.asarray(image)
    white = (pixels == 255).all(axis=2)
    assert white.mean() > 0.3  # a white background
    found = []
    for rgb in {tuple(int(c) for c in p) for p in pixels[~white]}:
        ys, xs = np.nonzero((pixels == rgb).all(axis=2))
        todo = set(zip(xs.tolist(), ys.tolist(), strict=True))
        while todo:
            start = todo.pop()
            region, frontier = [start], [start]
            while frontier:
                x, y = frontier.pop()
                for dx in (-1, 0, 1):
                    for dy in (-1, 0, 1):
                        neighbour = (x + dx, y + dy)
                        if neighbour in todo:
                            todo.remove(neighbour)
                            region.append(neighbour)
                            frontier.append(neighbour)
            found.append(Found(colour_of(rgb), region))
    return found


def by_name(found: list[Found]) -> dict[str, Found]:
    names = [f.name for f in found]
    assert len(set(names)) == len(names), f"an object name is ambiguous: {names}"
    return {f.name: f for f in found}


def question(sample: Sample) -> str:
    return sample.messages[0]["content"][1]["text"]


def options(text: str) -> dict[str, str]:
    lines = text.split("\n")
    assert len(lines) == 3 and lines[1].startswith("A. ") and lines[2].startswith("B. "), text
    return {"A": lines[1][3:], "B": lines[2][3:]}


def letter_for(text: str, option: str) -> str:
    return next(letter for letter, value in options(text).items() if value == option)


# ---- fixtures ----


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return spatial_scenes(250, 100, seed=3, image_dir=tmp_path_factory.mktemp("scenes"))


@pytest.fixture(scope="module")
def found(dataset):
    train, held_out = dataset
    return {s.id: components(s.images[0]) for s in train + held_out}


def of_family(dataset, family: str) -> list[Sample]:
    return [s for s in dataset[0] + dataset[1] if s.task == family]


def reward(completion: str, sample: Sample) -> float:
    return call_reward(get_reward(FAMILY_REWARDS[sample.task]), completion, sample, {}).score


# ---- per-sample checks: the picture and the answer, recomputed from the pixels ----


def check_picture(sample: Sample, objects: list[Found], canvas: int) -> None:
    assert 2 <= len(objects) <= 5, sample.id
    for obj in objects:
        x1, y1, x2, y2 = obj.box
        assert x2 - x1 == y2 - y1 and canvas / 8 - 1 <= x2 - x1 <= canvas / 3, (sample.id, obj.box)
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            gap = max(b.box[0] - a.box[2], a.box[0] - b.box[2], b.box[1] - a.box[3], a.box[1] - b.box[3])
            assert gap >= 2, (sample.id, a.box, b.box)
    # The metadata describes exactly what was drawn.
    drawn = sorted((o.shape, o.colour, list(o.box)) for o in objects)
    assert drawn == sorted((o["shape"], o["colour"], o["box"]) for o in sample.metadata["objects"])
    if sample.task != "count":
        by_name(objects)


def check_count(sample: Sample, objects: list[Found], canvas: int) -> None:
    match = re.fullmatch(r"How many (?:(red|green|blue|yellow) objects|(circle|square|triangle)s) are there\?",
                         question(sample))
    assert match, question(sample)
    colour, shape = match.groups()
    expected = sum(o.colour == colour if colour else o.shape == shape for o in objects)
    assert sample.ground_truth == str(expected), sample.id


def check_relation(sample: Sample, objects: list[Found], canvas: int) -> None:
    text = question(sample)
    match = re.fullmatch(r"Is (the \w+ \w+) (left or right of|above or below) (the \w+ \w+)\?", text.split("\n")[0])
    assert match, text
    named = by_name(objects)
    subject, reference = named[match.group(1)], named[match.group(3)]
    axis = 0 if match.group(2).startswith("left") else 1
    assert abs(subject.centre[axis] - reference.centre[axis]) >= canvas / 8
    # Separated on the asked axis: every pixel of one is on the stated side of the other.
    assert subject.box[axis + 2] <= reference.box[axis] or reference.box[axis + 2] <= subject.box[axis]
    before = subject.centre[axis] < reference.centre[axis]
    word = ("left" if before else "right") if axis == 0 else ("above" if before else "below")
    assert sorted(options(text).values()) == sorted(["left", "right"] if axis == 0 else ["above", "below"])
    assert sample.ground_truth == letter_for(text, word), sample.id
    assert sample.metadata["choices"] == options(text)


def check_depth(sample: Sample, objects: list[Found], canvas: int) -> None:
    text = question(sample)
    assert text.startswith("Which is closer to the camera?\n")
    named = by_name(objects)
    a, b = (named[name] for name in options(text).values())
    closer, farther = (a, b) if a.area > b.area else (b, a)
    # Larger both in drawn pixels and in box, by a clear margin (pixel counts rasterise, so 1.4).
    assert closer.area >= 1.4 * farther.area and closer.box_area >= 1.5 * farther.box_area
    assert sample.ground_truth == letter_for(text, closer.name), sample.id
    assert sample.metadata["choices"] == options(text)


def check_distance(sample: Sample, objects: list[Found], canvas: int) -> None:
    text = question(sample)
    match = re.fullmatch(r"Which is closer to (the \w+ \w+)\?", text.split("\n")[0])
    assert match, text
    named = by_name(objects)
    reference = named[match.group(1)]
    a, b = (named[name] for name in options(text).values())
    assert reference not in (a, b) and a is not b
    da, db = math.dist(reference.centre, a.centre), math.dist(reference.centre, b.centre)
    assert abs(da - db) >= canvas / 10
    nearer = a if da < db else b
    assert sample.ground_truth == letter_for(text, nearer.name), sample.id
    assert sample.metadata["choices"] == options(text)


def check_grounding(sample: Sample, objects: list[Found], canvas: int) -> None:
    match = re.fullmatch(r"Give the box of (the \w+ \w+)\.", question(sample))
    assert match, question(sample)
    target = by_name(objects)[match.group(1)]
    gold = sample.ground_truth
    assert isinstance(gold, list) and all(type(v) is int for v in gold)
    # Inclusive-exclusive boxes equal the drawn pixels' extent exactly (IoU 1).
    assert tuple(gold) == target.box, sample.id


CHECKS = {"count": check_count, "relation": check_relation, "depth": check_depth,
          "distance": check_distance, "grounding": check_grounding}


def test_scenes_are_clean_drawings(dataset, found):
    for sample in dataset[0] + dataset[1]:
        check_picture(sample, found[sample.id], CANVAS)


@pytest.mark.parametrize("family", FAMILIES)
def test_answers_match_the_pixels(dataset, found, family):
    samples = of_family(dataset, family)
    assert len(samples) == 70  # 50 train + 20 held out
    for sample in samples:
        CHECKS[family](sample, found[sample.id], CANVAS)


def test_count_answers_cover_zero_to_five(dataset, found):
    answers = collections.Counter(int(s.ground_truth) for s in of_family(dataset, "count"))
    assert set(answers) == {0, 1, 2, 3, 4, 5} and answers[0] < max(answers.values())


def test_relation_asks_both_axes(dataset):
    axes = collections.Counter("left or right" in question(s) for s in of_family(dataset, "relation"))
    assert min(axes[True], axes[False]) >= 15


@pytest.mark.parametrize("canvas", [64, 160])
def test_other_canvas_sizes(tmp_path, canvas):
    train, held_out = spatial_scenes(30, 10, seed=9, image_dir=tmp_path, canvas=canvas)
    for sample in train + held_out:
        objects = components(sample.images[0], canvas)
        check_picture(sample, objects, canvas)
        CHECKS[sample.task](sample, objects, canvas)


def test_choice_letters_are_balanced(dataset):
    for family in ("relation", "depth", "distance"):
        letters = collections.Counter(s.ground_truth for s in of_family(dataset, family))
        assert set(letters) == {"A", "B"} and min(letters.values()) >= 20, (family, letters)


# ---- formats and rewards ----


def test_sample_format(dataset):
    train, held_out = dataset
    for split, samples in (("train", train), ("eval", held_out)):
        for index, sample in enumerate(samples):
            assert sample.id == f"{split}-{index:05d}"
            assert sample.prompt is None
            assert sample.messages[0]["role"] == "user" and len(sample.messages) == 1
            image_part, text_part = sample.messages[0]["content"]
            assert image_part == {"type": "image"} and text_part["type"] == "text"
            assert text_part["text"].isascii()
            assert len(sample.images) == 1 and Path(sample.images[0]).name == f"{sample.id}.png"
            assert Path(sample.images[0]).is_absolute() and Path(sample.images[0]).is_file()
            assert sample.metadata["family"] == sample.task
            assert sample.metadata["sft_target"].isascii()


def test_sft_targets_by_family(dataset):
    count, relation, grounding = (of_family(dataset, f)[0] for f in ("count", "relation", "grounding"))
    assert count.metadata["sft_target"] == f"<answer>\\boxed{{{count.ground_truth}}}</answer>"
    assert relation.metadata["sft_target"] == f"<answer>\\boxed{{{relation.ground_truth}}}</answer>"
    x1, y1, x2, y2 = grounding.ground_truth
    assert grounding.metadata["sft_target"] == f"<answer>\\boxed{{[{x1},{y1},{x2},{y2}]}}</answer>"


def test_sft_targets_score_one_and_wrong_answers_less(dataset):
    for sample in dataset[0] + dataset[1]:
        assert reward(sample.metadata["sft_target"], sample) == 1.0, sample.id
        gold = sample.ground_truth
        if sample.task == "count":
            wrong = [f"<answer>\\boxed{{{int(gold) + 1}}}</answer>"]
            if gold != "0":
                wrong.append(f"<answer>\\boxed{{{int(gold) - 1}}}</answer>")
            assert all(reward(w, sample) < 0.9 for w in wrong), sample.id
        elif sample.task == "grounding":
            x1, y1, x2, y2 = gold
            shifted = f"<answer>\\boxed{{[{x1 + 4},{y1},{x2 + 4},{y2}]}}</answer>"
            assert reward(shifted, sample) < 0.9
            assert reward(f"<answer>\\boxed{{[{x1},{y1},{x2},{y2}]}}</answer>", sample) == 1.0
        else:
            other = "B" if gold == "A" else "A"
            assert reward(f"<answer>\\boxed{{{other}}}</answer>", sample) == 0.0
            # The option text of the right answer also counts.
            assert reward(f"<answer>{sample.metadata['choices'][gold]}</answer>", sample) == 1.0


# ---- splits, balance, determinism ----


def test_splits_share_no_scene(dataset):
    train, held_out = dataset
    image_hashes = [hashlib.sha256(Path(s.images[0]).read_bytes()).hexdigest() for s in train + held_out]
    assert len(set(image_hashes)) == len(image_hashes)  # no picture twice, within or across splits


def test_families_cycle_evenly(dataset, tmp_path):
    train, held_out = dataset
    assert [s.task for s in train[:10]] == list(FAMILIES) * 2
    for samples in (train, held_out):
        counts = collections.Counter(s.task for s in samples)
        assert set(counts) == set(FAMILIES) and max(counts.values()) - min(counts.values()) <= 1
    subset, _ = spatial_scenes(7, 0, seed=0, image_dir=tmp_path, families=("grounding", "depth"))
    assert [s.task for s in subset] == ["grounding", "depth"] * 3 + ["grounding"]


def snapshot(samples: list[Sample]) -> list:
    return [(s.to_dict() | {"images": None}, Path(s.images[0]).read_bytes()) for s in samples]


def test_same_seed_same_samples_and_bytes(tmp_path):
    first = spatial_scenes(12, 6, seed=5, image_dir=tmp_path / "a")
    before = snapshot(first[0] + first[1])
    again = spatial_scenes(12, 6, seed=5, image_dir=tmp_path / "b")
    assert snapshot(again[0] + again[1]) == before
    rerun = spatial_scenes(12, 6, seed=5, image_dir=tmp_path / "a")  # overwrites with the same bytes
    assert snapshot(rerun[0] + rerun[1]) == before
    other = spatial_scenes(12, 6, seed=6, image_dir=tmp_path / "c")
    other_bytes = [b for _, b in snapshot(other[0] + other[1])]
    assert not set(other_bytes) & {b for _, b in before}
    assert [question(s) for s in other[0]] != [question(s) for s in first[0]]


def test_held_out_does_not_depend_on_n_train(tmp_path):
    _, small = spatial_scenes(5, 10, seed=1, image_dir=tmp_path / "a")
    _, large = spatial_scenes(40, 10, seed=1, image_dir=tmp_path / "b")
    assert snapshot(small) == snapshot(large)


def test_generation_is_fast(tmp_path):
    import time

    start = time.perf_counter()
    train, held_out = spatial_scenes(400, 100, seed=0, image_dir=tmp_path)
    assert len(train) == 400 and len(held_out) == 100
    assert time.perf_counter() - start < 5.0  # ~0.5 s expected; 1000 samples take ~1 s


@pytest.mark.parametrize("kwargs, argument", [
    ({"n_train": -1}, "n_train"),
    ({"n_eval": -2}, "n_eval"),
    ({"n_train": 1.5}, "n_train"),
    ({"n_train": True}, "n_train"),
    ({"seed": "x"}, "seed"),
    ({"canvas": 32}, "canvas"),
    ({"canvas": 112.0}, "canvas"),
    ({"families": ("count", "colour")}, "families"),
    ({"families": ()}, "families"),
    ({"families": ("count", "count")}, "families"),
    ({"families": "count"}, "families"),
    ({"image_dir": None}, "image_dir"),
    ({"image_dir": ""}, "image_dir"),
    ({"colours": ["red", "purple"]}, "colours"),
    ({"colours": ["red"]}, "colours"),
    ({"colours": ["red", "red"]}, "colours"),
    ({"colours": "red"}, "colours"),
])
def test_bad_arguments(tmp_path, kwargs, argument):
    arguments = {"n_train": 2, "n_eval": 2, "seed": 0, "image_dir": tmp_path} | kwargs
    n_train, n_eval = arguments.pop("n_train"), arguments.pop("n_eval")
    with pytest.raises(ValueError, match=argument):
        spatial_scenes(n_train, n_eval, **arguments)


def asked_words(sample: Sample) -> tuple[list[str], list[str]]:
    """Colour and shape words of the question, read with a regex (independent of the generator)."""
    text = question(sample)
    return (re.findall(r"\b(red|green|blue|yellow)\b", text),
            [m.rstrip("s") for m in re.findall(r"\b(circles?|squares?|triangles?)\b", text)])


def test_default_word_rank_orders_colours_then_shapes(dataset):
    order = [*COLOUR_NAMES, *SHAPE_NAMES]
    for sample in dataset[0] + dataset[1]:
        colours, shapes = asked_words(sample)
        assert sample.metadata["word_rank"] == max(order.index(w) for w in colours + shapes), sample.id
    # Naming questions always need a shape word, so only count questions rank below 4.
    assert {s.task for s in dataset[0] if s.metadata["word_rank"] < 4} == {"count"}


def test_palette_with_one_object_per_colour(tmp_path):
    palette = ["blue", "red", "green"]
    train, held_out = spatial_scenes(100, 25, seed=4, image_dir=tmp_path, colours=palette, distinct_colours=True)
    ranks = collections.Counter()
    for sample in train + held_out:
        objects = components(sample.images[0])
        check_picture(sample, objects, CANVAS)
        CHECKS[sample.task](sample, objects, CANVAS)
        drawn = [o.colour for o in objects]
        assert set(drawn) <= set(palette), sample.id
        colours, shapes = asked_words(sample)
        if sample.task == "count":
            assert sample.metadata["word_rank"] == [*palette, *SHAPE_NAMES].index((colours + shapes)[0])
        else:
            assert len(set(drawn)) == len(drawn), sample.id  # the colour names the object
            assert sample.metadata["word_rank"] == max(palette.index(c) for c in colours), sample.id
        ranks[sample.metadata["word_rank"]] += 1
    assert set(ranks) == set(range(6))


def test_m2_mix_is_half_text_half_scenes_all_with_a_difficulty(tmp_path):
    from trainer.recipe_config import compose_config
    from trainer.prompt_sets import load_prompt_sets

    cfg = compose_config([f"trainer.output_dir={tmp_path}", "data.train=synthetic:math_choice_and_spatial",
                          "data.num_train=11", "data.num_eval=4"])
    train, held_out = load_prompt_sets(cfg, image_dir=tmp_path / "images")
    assert (len(train), len(held_out)) == (11, 4)
    with_images = [s for s in train if s.images]
    assert len(with_images) == 5 and {s.task for s in with_images} == set(FAMILIES)
    assert {s.task for s in train if not s.images} <= {"math", "multiple_choice"}
    assert sum(1 for s in held_out if s.images) == 2
    # The curriculum sorts every task by this key; scenes use their object count.
    assert all(isinstance(s.metadata["difficulty"], int) for s in train + held_out)
    assert all(s.metadata["difficulty"] == len(s.metadata["objects"]) for s in with_images)
    assert len({s.id for s in train + held_out}) == 15


def test_quickstart_vl_scene_options_reach_the_generator(tmp_path):
    from trainer.recipe_config import compose_config
    from trainer.prompt_sets import load_prompt_sets
    from data.curriculum import curriculum_stages

    cfg = compose_config(["recipe=quickstart_vl", f"trainer.output_dir={tmp_path}", "data.num_train=40",
                          "data.num_eval=10"])
    train, held_out = load_prompt_sets(cfg, image_dir=tmp_path / "images")
    palette = list(cfg.data.scenes.colours)
    assert palette == ["red", "green", "blue"] and cfg.data.scenes.distinct_colours
    for sample in train + held_out:
        colours = [o["colour"] for o in sample.metadata["objects"]]
        assert set(colours) <= set(palette)
        if sample.task != "count":
            assert len(set(colours)) == len(colours), sample.id
    # The recipe's SFT curriculum key is on every sample; stages 0..2 are the colours, 3..5 the shapes.
    stages = curriculum_stages(train, cfg.sft.curriculum_key)
    assert set(stages) <= set(range(6))
    # One object per colour: naming questions rank by their colours alone (0..2).
    assert {rank for s, rank in zip(train, stages) if s.task != "count"} == {0, 1, 2}
