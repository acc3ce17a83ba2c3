r"""Synthetic rendered scenes with spatial-reasoning questions in the CV-Bench families.

Each sample is one PNG (`canvas` x `canvas` RGB, white background) holding 2 to 5 flat shapes
(circle, square, upward triangle) in pure colours (red, green, blue, yellow), sized between about
canvas/8 and canvas/3, fully inside the canvas and never closer than 2 px box to box. The question
asks about that picture; the answer is right by construction and only asked when it is clear.

| family    | question                                                      | ground_truth     | reward            |
|-----------|---------------------------------------------------------------|------------------|-------------------|
| count     | How many red objects are there? / How many circles are there? | "3" (0..5)       | `numeric`         |
| relation  | Is the red circle left or right of the blue square? (+ A/B)   | "A" or "B"       | `multiple_choice` |
| depth     | Which is closer to the camera? (+ A/B: two objects)           | "A" or "B"       | `multiple_choice` |
| distance  | Which is closer to the green triangle? (+ A/B: two others)    | "A" or "B"       | `multiple_choice` |
| grounding | Give the box of the blue square.                              | [x1, y1, x2, y2] | `spatial_iou`     |

Choice questions end with two option lines, e.g. `Is the red circle above or below the blue
square?\nA. below\nB. above` or `Which is closer to the camera?\nA. the red circle\nB. the blue square`.

Clear by construction:
- relation: the centres differ by >= canvas/8 on the asked axis and the two boxes do not overlap
  on it (so "left of" holds for every pixel, not only the centres); above/below uses the vertical axis.
- depth (closer = larger): the larger object's filled area and its box area are both >= 1.5x the other's.
- distance: centre-to-centre Euclidean distances to the reference differ by >= canvas/10.
- Choice options are two, in random order; `metadata.choices` = {"A": text, "B": text}, as
  `multiple_choice` reads it (it also accepts the option text as an answer).
- Scenes of the naming families (all but count) have unique (shape, colour) pairs, so "the red
  circle" names one object. Count scenes may repeat pairs and are built around an answer drawn
  first: 0 in about 10% of questions (a colour or shape not drawn), else 1..5 equally often.

Options: `colours` draws from a subset of the palette (at least two, in the order given);
`distinct_colours=True` gives the naming families' scenes one object per colour (so at most as many
objects as colours), so "the red circle" is also the only red object. Both shrink the vocabulary a
question can bind to the picture, for a small model learning from scratch.

Boxes are integer pixels, inclusive-exclusive: `[x1, y1, x2, y2]` covers columns x1..x2-1 and rows
y1..y2-1, so x2 - x1 is the width and the box of an object is exactly its drawn pixels' extent.

Every sample: `task` = family, `messages` = one user turn `[{"type": "image"}, {"type": "text",
"text": question}]` (Qwen2-VL format), `images` = [absolute path of `<id>.png` under image_dir],
ids `train-00000` / `eval-00000` (so one image_dir should hold one dataset), and metadata
`family`, `canvas`, `objects` (list of {shape, colour, box} in drawing order), `difficulty` (the
number of objects, a curriculum key), `word_rank` (the position, in the palette's colours then
circle, square, triangle, of the last of these words the question needs; with `distinct_colours`
naming questions need only their colours: a key for a curriculum that adds one question word at a
time), `choices` (choice families) and `sft_target`, the answer
alone: `<answer>\boxed{3}</answer>`, `<answer>\boxed{A}</answer>` or
`<answer>\boxed{[x1,y1,x2,y2]}</answer>`.

The held-out split comes from its own random stream, drawn first, so it does not change with
n_train; the train split rejects any scene (its sorted object list) already used, so no scene is
in both splits or twice in one.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from data.schema import Sample

FAMILIES = ("count", "relation", "depth", "distance", "grounding")
FAMILY_REWARDS = {
    "count": "numeric",
    "relation": "multiple_choice",
    "depth": "multiple_choice",
    "distance": "multiple_choice",
    "grounding": "spatial_iou",
}
SHAPES = ("circle", "square", "triangle")
# Far apart in RGB and drawn without anti-aliasing, so every object pixel is exactly one of these.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 30),
    "blue": (30, 60, 220),
    "yellow": (235, 200, 20),
}
BACKGROUND = (255, 255, 255)

MIN_CANVAS = 64  # below this the smallest shapes are a few pixels and lose their form
MIN_OBJECTS, MAX_OBJECTS = 2, 5
BOX_GAP = 2  # empty pixels required between any two boxes
DEPTH_AREA_RATIO = 1.5
ZERO_COUNT_SHARE = 0.1  # share of count questions about an absent colour/shape (answer 0)
# Filled share of an object's box, to compare areas without rasterising.
_FILL = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}
_PLACEMENT_TRIES = 60
_SCENE_TRIES = 2000


@dataclass(frozen=True)
class _Object:
    shape: str
    colour: str
    x1: int
    y1: int
    size: int

    @property
    def x2(self) -> int:
        return self.x1 + self.size

    @property
    def y2(self) -> int:
        return self.y1 + self.size

    @property
    def box(self) -> list[int]:
        return [self.x1, self.y1, self.x2, self.y2]

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    @property
    def box_area(self) -> int:
        return self.size * self.size

    @property
    def area(self) -> float:
        return _FILL[self.shape] * self.box_area

    @property
    def name(self) -> str:
        return f"the {self.colour} {self.shape}"

    def key(self) -> tuple:
        return (self.shape, self.colour, self.x1, self.y1, self.size)


def _apart(a: _Object, b: _Object) -> bool:
    return (a.x2 + BOX_GAP <= b.x1 or b.x2 + BOX_GAP <= a.x1
            or a.y2 + BOX_GAP <= b.y1 or b.y2 + BOX_GAP <= a.y1)


def _place(rng: random.Random, canvas: int, kinds: Sequence[tuple[str, str]]) -> list[_Object] | None:
    """A random non-overlapping layout of `kinds`, or None when they did not fit (caller redraws)."""
    smallest, largest = round(canvas / 8), canvas // 3
    objects: list[_Object] = []
    for shape, colour in kinds:
        for _ in range(_PLACEMENT_TRIES):
            size = rng.randint(smallest, largest)
            candidate = _Object(shape, colour, rng.randint(0, canvas - size), rng.randint(0, canvas - size), size)
            if all(_apart(candidate, other) for other in objects):
                objects.append(candidate)
                break
        else:
            return None
    return objects


def _render(objects: Sequence[_Object], canvas: int) -> Image.Image:
    image = Image.new("RGB", (canvas, canvas), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        # PIL's corners are inclusive, hence x2 - 1 / y2 - 1 (checked: drawn extent == box).
        right, bottom = obj.x2 - 1, obj.y2 - 1
        fill = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse([obj.x1, obj.y1, right, bottom], fill=fill)
        elif obj.shape == "square":
            draw.rectangle([obj.x1, obj.y1, right, bottom], fill=fill)
        else:
            draw.polygon([(obj.x1, bottom), ((obj.x1 + right) / 2, obj.y1), (right, bottom)], fill=fill)
    return image


# ---- questions: each returns (question, ground_truth, choices or None) or None if the scene cannot pose it ----

Question = tuple[str, Any, dict[str, str] | None]


def _two_options(rng: random.Random, correct: str, wrong: str) -> tuple[str, str, dict[str, str]]:
    """Options text, gold letter and choices, with the correct option's position random."""
    first, second = (correct, wrong) if rng.random() < 0.5 else (wrong, correct)
    letter = "A" if first == correct else "B"
    return f"A. {first}\nB. {second}", letter, {"A": first, "B": second}


def _count_plan(rng: random.Random, palette: Sequence[str]) -> tuple[list[tuple[str, str]], Question]:
    """Kinds for a count scene and its question. The answer is drawn first, so answers 1..5 are
    equally common (0 rarer); drawing the scene first would make most answers 1."""
    by_colour = rng.random() < 0.5
    values = list(palette) if by_colour else list(SHAPES)
    others = list(SHAPES) if by_colour else list(palette)
    value = rng.choice(values)
    answer = 0 if rng.random() < ZERO_COUNT_SHARE else rng.randint(1, MAX_OBJECTS)
    total = rng.randint(max(MIN_OBJECTS, answer), MAX_OBJECTS)
    rest = [v for v in values if v != value]
    picks = [value] * answer + [rng.choice(rest) for _ in range(total - answer)]
    rng.shuffle(picks)  # placement order decides which objects fit; keep it unrelated to the answer
    kinds = [(rng.choice(others), v) if by_colour else (v, rng.choice(others)) for v in picks]
    question = f"How many {value} objects are there?" if by_colour else f"How many {value}s are there?"
    return kinds, (question, str(answer), None)


def _clearly_ordered(a: _Object, b: _Object, along: int, canvas: int) -> bool:
    """Boxes disjoint along the axis (0 = x, 1 = y) and centres >= canvas/8 apart on it."""
    lo_a, hi_a = (a.x1, a.x2) if along == 0 else (a.y1, a.y2)
    lo_b, hi_b = (b.x1, b.x2) if along == 0 else (b.y1, b.y2)
    separated = hi_a <= lo_b or hi_b <= lo_a
    return separated and abs(a.centre[along] - b.centre[along]) >= canvas / 8


def _relation_question(rng: random.Random, objects: Sequence[_Object], canvas: int) -> Question | None:
    axes = ["horizontal", "vertical"]
    rng.shuffle(axes)
    for axis in axes:
        along = 0 if axis == "horizontal" else 1
        pairs = [(a, b) for a in objects for b in objects if a is not b and _clearly_ordered(a, b, along, canvas)]
        if not pairs:
            continue
        subject, reference = rng.choice(pairs)
        before = subject.centre[along] < reference.centre[along]
        if axis == "horizontal":
            words, correct = ("left", "right"), "left" if before else "right"
            stem = f"Is {subject.name} left or right of {reference.name}?"
        else:
            words, correct = ("above", "below"), "above" if before else "below"
            stem = f"Is {subject.name} above or below {reference.name}?"
        wrong = words[1] if correct == words[0] else words[0]
        options, letter, choices = _two_options(rng, correct, wrong)
        return f"{stem}\n{options}", letter, choices
    return None


def _depth_question(rng: random.Random, objects: Sequence[_Object], canvas: int) -> Question | None:
    pairs = [
        (big, small) for big in objects for small in objects
        if big.area >= DEPTH_AREA_RATIO * small.area and big.box_area >= DEPTH_AREA_RATIO * small.box_area
    ]
    if not pairs:
        return None
    closer, farther = rng.choice(pairs)
    options, letter, choices = _two_options(rng, closer.name, farther.name)
    return f"Which is closer to the camera?\n{options}", letter, choices


def _distance_question(rng: random.Random, objects: Sequence[_Object], canvas: int) -> Question | None:
    def dist(a: _Object, b: _Object) -> float:
        return math.dist(a.centre, b.centre)

    triples = [
        (ref, near, far) for ref in objects for near in objects for far in objects
        if len({id(ref), id(near), id(far)}) == 3 and dist(ref, far) - dist(ref, near) >= canvas / 10
    ]
    if not triples:
        return None
    reference, near, far = rng.choice(triples)
    options, letter, choices = _two_options(rng, near.name, far.name)
    return f"Which is closer to {reference.name}?\n{options}", letter, choices


def _grounding_question(rng: random.Random, objects: Sequence[_Object], canvas: int) -> Question:
    target = rng.choice(objects)
    return f"Give the box of {target.name}.", target.box, None


# Questions about named objects; count scenes are planned with their question (`_count_plan`).
_QUESTIONS: dict[str, Callable[[random.Random, Sequence[_Object], int], Question | None]] = {
    "relation": _relation_question,
    "depth": _depth_question,
    "distance": _distance_question,
    "grounding": _grounding_question,
}


def _word_rank(question: str, needs_shapes: bool, palette: Sequence[str]) -> int:
    """Position, in (palette colours in order, then circle, square, triangle), of the last of these
    words the question needs: an SFT curriculum key that brings in one question word at a time."""
    order = [*palette, *(SHAPES if needs_shapes else ())]
    words = {word.rstrip("s") for word in question.replace("?", " ").replace(".", " ").split()}
    return max(i for i, word in enumerate(order) if word in words)


def _answer_text(ground_truth: Any) -> str:
    if isinstance(ground_truth, list):
        return "[" + ",".join(str(v) for v in ground_truth) + "]"
    return str(ground_truth)


# ---- public API ----


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_arguments(n_train: Any, n_eval: Any, seed: Any, canvas: Any, families: Any) -> list[str]:
    for name, value in (("n_train", n_train), ("n_eval", n_eval)):
        if not _is_int(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not _is_int(canvas) or canvas < MIN_CANVAS:
        raise ValueError(f"canvas must be an integer >= {MIN_CANVAS} (pixels), got {canvas!r}")
    # A bare string would iterate as letters.
    if isinstance(families, str) or not isinstance(families, Sequence) or not families:
        raise ValueError(f"families must be a non-empty sequence of family names, got {families!r}")
    families = list(families)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"families has unknown name(s) {unknown}; known: {list(FAMILIES)}")
    if len(set(families)) != len(families):
        raise ValueError(f"families must not repeat a name, got {families!r}")
    return families


def _check_palette(colours: Any) -> list[str]:
    if colours is None:
        return list(COLOURS)
    if isinstance(colours, str) or not isinstance(colours, Sequence):
        raise ValueError(f"colours must be a list of colour names, got {colours!r}")
    colours = list(colours)
    unknown = [c for c in colours if c not in COLOURS]
    if unknown:
        raise ValueError(f"colours has unknown name(s) {unknown}; known: {list(COLOURS)}")
    if len(set(colours)) != len(colours) or len(colours) < 2:
        raise ValueError(f"colours needs at least 2 different names, got {colours!r}")
    return colours


def _make_split(
    rng: random.Random, n: int, split: str, canvas: int, families: Sequence[str], seen: set, image_dir: Path,
    palette: Sequence[str], distinct_colours: bool,
) -> list[Sample]:
    samples = []
    all_kinds = [(shape, colour) for shape in SHAPES for colour in palette]
    for index in range(n):
        family = families[index % len(families)]
        for _ in range(_SCENE_TRIES):
            if family == "count":
                kinds, posed = _count_plan(rng, palette)
            elif distinct_colours:
                # One object per colour, so the colour word alone names it.
                colours = rng.sample(list(palette), rng.randint(MIN_OBJECTS, min(MAX_OBJECTS, len(palette))))
                kinds = [(rng.choice(SHAPES), colour) for colour in colours]
            else:
                # Unique (shape, colour) pairs, so "the red circle" names one object.
                kinds = rng.sample(all_kinds, rng.randint(MIN_OBJECTS, MAX_OBJECTS))
            objects = _place(rng, canvas, kinds)
            if objects is None:
                continue
            scene_key = tuple(sorted(o.key() for o in objects))
            if scene_key in seen:
                continue
            if family != "count":
                posed = _QUESTIONS[family](rng, objects, canvas)
            if posed is not None:
                break
        else:
            raise RuntimeError(f"no {family} scene found in {_SCENE_TRIES} draws (canvas {canvas})")
        seen.add(scene_key)
        question, ground_truth, choices = posed
        sample_id = f"{split}-{index:05d}"
        path = image_dir / f"{sample_id}.png"
        _render(objects, canvas).save(path, format="PNG")
        metadata: dict[str, Any] = {
            "family": family,
            "canvas": canvas,
            "objects": [{"shape": o.shape, "colour": o.colour, "box": o.box} for o in objects],
            "difficulty": len(objects),  # more objects, more clutter: the curriculum key M2-Reasoning sorts by
            # With one object per colour, naming questions need their colour words only.
            "word_rank": _word_rank(question, family == "count" or not distinct_colours, palette),
        }
        if choices is not None:
            metadata["choices"] = choices
        metadata["sft_target"] = f"<answer>\\boxed{{{_answer_text(ground_truth)}}}</answer>"
        samples.append(Sample(
            messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
            ground_truth=ground_truth,
            task=family,
            images=[str(path)],
            metadata=metadata,
            id=sample_id,
        ))
    return samples


def spatial_scenes(
    n_train: int,
    n_eval: int,
    *,
    seed: int,
    image_dir: str | Path,
    canvas: int = 112,
    families: Sequence[str] = FAMILIES,
    colours: Sequence[str] | None = None,
    distinct_colours: bool = False,
) -> tuple[list[Sample], list[Sample]]:
    """`(train, held_out)` scene questions cycling through `families`; PNGs go to `image_dir`.

    See the module docstring for the formats. Same arguments give the same samples and image bytes.
    """
    families = _check_arguments(n_train, n_eval, seed, canvas, families)
    palette = _check_palette(colours)
    # An empty path would mean the working directory: refuse rather than litter it.
    if not isinstance(image_dir, (str, Path)) or not str(image_dir):
        raise ValueError(f"image_dir must be a non-empty path, got {image_dir!r}")
    # Absolute paths, so workers with another working directory still find the images.
    image_dir = Path(os.path.abspath(image_dir))
    image_dir.mkdir(parents=True, exist_ok=True)
    seen: set = set()
    # String seeds hash with SHA-512, so each stream is fixed across processes and Python runs.
    held_out = _make_split(random.Random(f"spatial-eval-{seed}"), n_eval, "eval", canvas, families, seen, image_dir,
                           palette, distinct_colours)
    train = _make_split(random.Random(f"spatial-train-{seed}"), n_train, "train", canvas, families, seen, image_dir,
                        palette, distinct_colours)
    return train, held_out
