"""Synthetic addition problems for the embedded quickstart.

A prompt is `47+385`; the target response works column by column from the
least significant digit, then answers:

    <think>7+5=12,4+8+1=13,3+1=4</think><answer>\\boxed{432}</answer>

Train and held-out sets are disjoint by construction (pairs are drawn without
replacement from one shuffled pool), so held-out accuracy measures generalisation.
"""

from __future__ import annotations

import random

from data.schema import Sample

TASK = "arithmetic"


def column_steps(a: int, b: int) -> str:
    """The worked columns: each step lists the digits present (and the carry), then their sum."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        terms = [d for d in (da[i : i + 1], db[i : i + 1]) if d]
        if carry:
            terms.append("1")
        total = sum(int(t) for t in terms)
        steps.append(f"{'+'.join(terms)}={total}")
        carry = total // 10
    return ",".join(steps)


def target_response(a: int, b: int) -> str:
    return f"<think>{column_steps(a, b)}</think><answer>\\boxed{{{a + b}}}</answer>"


def _draw_operand(rng: random.Random, three_digit_share: float) -> int:
    return rng.randint(100, 999) if rng.random() < three_digit_share else rng.randint(10, 99)


def make_splits(
    n_train: int, n_eval: int, *, seed: int, three_digit_share: float = 0.3
) -> tuple[list[Sample], list[Sample]]:
    """Disjoint train and held-out problem sets; operands are 2-digit, or 3-digit with the given share."""
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    samples: list[Sample] = []
    while len(samples) < n_train + n_eval:
        a, b = _draw_operand(rng, three_digit_share), _draw_operand(rng, three_digit_share)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        samples.append(
            Sample(
                prompt=f"{a}+{b}",
                ground_truth=str(a + b),
                task=TASK,
                metadata={"sft_target": target_response(a, b)},
                id=f"add-{a}-{b}",
            )
        )
    return samples[:n_train], samples[n_train:]


CHAT_PROMPT = "What is {a} + {b}? Put the final answer in \\boxed{{}}."


def chat_splits(n_train: int, n_eval: int, *, seed: int, max_operand: int = 29) -> tuple[list[Sample], list[Sample]]:
    """Addition asked in words, for pretrained chat models (`synthetic:addition_chat`): operands 0..max_operand,
    disjoint train and held-out pairs. The SFT target is the one-line form `a + b = \\boxed{a+b}`."""
    pairs = [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    if n_train + n_eval > len(pairs):
        raise ValueError(f"addition_chat has {len(pairs)} distinct problems; asked for {n_train} + {n_eval}")
    random.Random(seed).shuffle(pairs)
    samples = [
        Sample(prompt=CHAT_PROMPT.format(a=a, b=b), ground_truth=str(a + b), task=TASK,
               metadata={"digits": len(str(max(a, b))), "sft_target": f"{a} + {b} = \\boxed{{{a + b}}}"},
               id=f"add-{a}-{b}")
        for a, b in pairs[: n_train + n_eval]
    ]
    return samples[:n_train], samples[n_train:]
