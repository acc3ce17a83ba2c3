"""How fast does the tiny Qwen2-VL learn to count, with one fixed question or the question varying?

Scenes from data/spatial_scenes.py's renderer (2 to 5 shapes, image first, as the generator lays
them out). Three runs of plain SFT on `<answer>\\boxed{N}</answer>` from the embedded tiny_vl model:
- fixed: always "How many red objects are there?";
- varied: the count family's questions, one of 4 colours or 3 shapes ("How many circles are there?");
- question (a control): the varied questions, but the target digit depends on the asked word alone
  (red 0, green 1, ..., circle 4, square 5, triangle 0), not on the picture.
Every `--eval-every` steps it prints the held-out accuracy of the answer digit (argmax after
`<answer>\\boxed{`); answers are 0 to 5 about equally often, so chance is about 1/6.

    .venv/bin/python bench/bench_vl_questions.py            # all three runs, about 6 minutes on 2 cores
    .venv/bin/python bench/bench_vl_questions.py --only varied --fixed-first 400   # curriculum
    .venv/bin/python bench/bench_vl_questions.py --only varied --staged 250 --lr 3e-4 --steps 2000
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.spatial_scenes import COLOURS, SHAPES, _place, _render  # noqa: E402
from trainer.config import TinyModelConfig, TinyVisionConfig  # noqa: E402
from trainer.tiny_model import build_tiny_vl_model  # noqa: E402
from trainer.vision import encode_with_images, load_processor, vision_inputs  # noqa: E402

CANVAS = 112


def question(value: str) -> str:
    return f"How many {value} objects are there?" if value in COLOURS else f"How many {value}s are there?"


def make_scenes(n: int, values: list[str], rng: random.Random, folder: Path, prefix: str):
    """(image path, question, answer) triples; the answer is drawn first, so 0..5 are equally common."""
    scenes = []
    while len(scenes) < n:
        value = rng.choice(values)
        answer = rng.randint(0, 5)
        total = rng.randint(max(2, answer), 5)
        same = list(COLOURS) if value in COLOURS else list(SHAPES)
        picks = [value] * answer + [rng.choice([v for v in same if v != value]) for _ in range(total - answer)]
        kinds = [(rng.choice(SHAPES), v) if value in COLOURS else (v, rng.choice(list(COLOURS))) for v in picks]
        objects = _place(rng, CANVAS, kinds)
        if objects is None:
            continue
        path = folder / f"{prefix}-{len(scenes)}.png"
        _render(objects, CANVAS).save(path)
        scenes.append((str(path), question(value), answer))
    return scenes


def run(train, held_out, model_dir: Path, args, first=None) -> list[tuple[int, float]]:
    """SFT on `train` (on `first` for the first `args.fixed_first` steps, when given); the accuracy curve."""
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    processor = load_processor(str(model_dir))
    tokenizer = processor.tokenizer
    model = Qwen2VLForConditionalGeneration.from_pretrained(model_dir)
    prefix = tokenizer("<answer>\\boxed{", add_special_tokens=False)["input_ids"]

    def encode(scenes):
        rows = []
        for path, asked, answer in scenes:
            parts = [{"type": "image"}, {"type": "text", "text": asked}]
            if args.question_first:
                parts.reverse()
            text = processor.apply_chat_template([{"role": "user", "content": parts}], add_generation_prompt=True,
                                                 tokenize=False)
            ids, media = encode_with_images(processor, text, [path], path)
            target = tokenizer(f"<answer>\\boxed{{{answer}}}</answer><|im_end|>", add_special_tokens=False)["input_ids"]
            rows.append((ids, target, media, answer))
        return rows

    def batch(rows, with_target):
        seqs = [ids + (target if with_target else prefix) for ids, target, _, _ in rows]
        width = max(map(len, seqs))
        input_ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
        mask = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, -100)
        for i, (seq, (ids, _, _, _)) in enumerate(zip(seqs, rows)):
            input_ids[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
            if with_target:
                labels[i, len(ids):len(seq)] = input_ids[i, len(ids):len(seq)]
        media = vision_inputs(input_ids, [m for _, _, m, _ in rows], model.config.image_token_id)
        return input_ids, mask, labels, media

    train_rows, eval_rows = encode(train), encode(held_out)
    first_rows = encode(first) if first else None
    # --staged N: stage k trains on the rows whose question is among the first k seen; k = 1 + (step-1)//N.
    asked_order = list(dict.fromkeys(asked for _, asked, _ in train))
    staged_pools = [[row for row, (_, asked, _) in zip(train_rows, train) if asked in asked_order[:k]]
                    for k in range(1, len(asked_order) + 1)]

    digits = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(6)]

    def accuracy() -> float:
        model.eval()
        right = 0
        with torch.no_grad():
            for start in range(0, len(eval_rows), 50):
                rows = eval_rows[start:start + 50]
                input_ids, mask, _, media = batch(rows, with_target=False)
                logits = model(input_ids=input_ids, attention_mask=mask, **media).logits
                last = mask.sum(1) - 1
                for i, row in enumerate(rows):
                    right += int(logits[i, last[i], digits].argmax()) == row[3]
        model.train()
        return right / len(eval_rows)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    rng = random.Random(0)
    curve = [(0, accuracy())]
    for step in range(1, args.steps + 1):
        pool = first_rows if first_rows and step <= args.fixed_first else train_rows
        if args.staged:
            pool = staged_pools[min((step - 1) // args.staged, len(staged_pools) - 1)]
        input_ids, mask, labels, media = batch(rng.sample(pool, args.batch_size), with_target=True)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels, **media).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.eval_every == 0:
            curve.append((step, accuracy()))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--question-first", action="store_true", help="ask the question before the image")
    parser.add_argument("--only", choices=["fixed", "varied", "question"], help="run one of the three")
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--fixed-first", type=int, default=0, metavar="N",
                        help="varied run: train its first N steps on the fixed question (a curriculum)")
    parser.add_argument("--staged", type=int, default=0, metavar="N",
                        help="a curriculum: train on one question first and add the next every N steps")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_dir = build_tiny_vl_model(TinyModelConfig(max_position_embeddings=512), TinyVisionConfig(),
                                        folder / "model", seed=0, image_pixels=TinyVisionConfig().image_pixels)
        every = [*COLOURS, *SHAPES]
        for name, values in (("fixed", ["red"]), ("varied", every), ("question", every)):
            if args.only not in (None, name):
                continue
            rng = random.Random(0)
            held_out = make_scenes(args.eval, values, rng, folder, f"{name}-eval")
            train = make_scenes(args.train, values, rng, folder, f"{name}-train")
            if name == "question":
                digit = {question(value): i % 6 for i, value in enumerate(every)}
                held_out, train = ([(path, asked, digit[asked]) for path, asked, _ in scenes] for scenes in (held_out, train))
            started = time.time()
            first = None
            if name == "varied" and args.fixed_first:
                first = make_scenes(args.train, ["red"], random.Random(1), folder, "first")
            curve = run(train, held_out, model_dir, args, first)
            points = "  ".join(f"{step}:{acc:.1%}" for step, acc in curve)
            print(f"{name:7s} held-out accuracy by SFT step  {points}  ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
