r"""Synthetic data for the recipes' tiny presets (M-Thinker, Baichuan-M2, M2-Reasoning).

Every generator returns `(train, held_out)`: disjoint (no problem appears in both), fixed by `seed`,
right by construction, and each sample carries `metadata.sft_target` for cold-start SFT. With
`render="tiny"` (the default) prompts and targets use only the embedded tiny model's vocabulary:
digits, `+ = ,` and the markers `<think> </think> <answer> </answer> \boxed{ }`, no spaces.
`render="text"` writes the same problems in words, for real models (English only, except for
multilingual_arithmetic). Tasks: `multilingual_arithmetic`, `rubric`, `math` and `multiple_choice`.

The worked reasoning is the quickstart's (`data.arithmetic`): one step per column from the least
significant digit, listing the digits present and the carry, then their sum: `7+5=12,4+8+1=13,3+1=4`.

multilingual_arithmetic (M-Thinker)
    Each problem is posed in every language; `n_train`/`n_eval` count problems, so a split holds
    `n * len(languages)` samples. Metadata: `language`, `problem_id` (shared by the translations of
    one problem), `english_reference` (the English reasoning, for the cross-lingual alignment reward).
    Tiny render: a language is a writing convention made of `=` and `+`, its `language_marker`
    (`LANGUAGE_MARKERS`: en "", zh "=", fr "+", de "==", es "++", ja "=+", ru "+="). The prompt starts
    with the marker, every reasoning step starts with it and so does the answer:

        zh prompt  =47+385
        zh target  <think>=7+5=12,=4+8+1=13,=3+1=4</think><answer>=\boxed{432}</answer>

    English has the empty marker, so its samples are exactly the quickstart's, and a model that drops
    the marker "falls back to English", the failure M-Thinker's language-consistency reward targets.
    Text render: the question, the reasoning and the answer sentence in the language itself (en,
    zh, fr, de, es, ja), so the `language_consistency` reward can judge them.

rubric_short_answers (Baichuan-M2)
    Additions of two or three numbers. The ground truth is a rubric list
    `[{"criterion": str, "points": int}]` (what the LLM-judged `rubric` reward reads); the same
    criteria, in the same order, are in `metadata.rubric_checks` as rules a program can check:

    | check               | met when                                             | points                  |
    |---------------------|------------------------------------------------------|-------------------------|
    | `answer_equals`     | the boxed answer is the sum                          | +4..+6                  |
    | `steps_correct`     | the reasoning has exactly the right column steps     | +2..+3                  |
    | `single_boxed`      | the answer region holds exactly one `\boxed{}`       | +1                      |
    | `max_answer_digits` | the boxed answer is a number of at most N digits     | +1 (half the samples)   |
    | `wrong_step`        | some step `x+y=t` in the reasoning has x+y != t      | -4..-2                  |
    | `dropped_carry`     | the boxed answer is the sum with every carry dropped | -3..-1 (only if != sum) |

    The `rubric_checks` reward (rewards/rubric.py) decides them and scores them like the rubric reward:
    (achieved - min) / (max - min), min = sum of negative points, max = sum of positive points.

math_and_choice (M2-Reasoning)
    A mix of task `math` (the addition, boxed sum) and task `multiple_choice` (which of 4 numbers is
    the sum), `choice_share` of each split being multiple choice. The options are digit strings in
    `metadata.choices` (distractors are typical slips: off by one or ten, a dropped carry);
    `metadata.answer_index` is the 1-based position of the sum. The tiny vocabulary has no letters,
    so in the tiny render the options follow the problem after `=` and the answer is the index as a
    digit (ground truth "2"); the reasoning ends with the step `<sum>=<index>`:

        prompt  47+385=431,432,422,532
        target  <think>7+5=12,4+8+1=13,3+1=4,432=2</think><answer>\boxed{2}</answer>

    Options are at least 10, so an index digit never equals an option's text, and the
    `multiple_choice` reward, finding no option letter, scores the tiny render by comparing the boxed
    index with the ground truth as text. The text render labels the options A-D and the ground truth
    is the letter. `metadata.difficulty` (an int, for curriculum ordering) = number of carries +
    (digits of the longer operand - 2).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from data.preprocess import INSTRUCTIONS
from data.schema import Sample

RENDERS = ("tiny", "text")

# Runs of `=`/`+` never occur inside a step (steps alternate digits and single operators), and
# every step starts with a digit, so a step's marker is exactly its text before the first digit.
LANGUAGE_MARKERS = {"en": "", "zh": "=", "fr": "+", "de": "==", "es": "++", "ja": "=+", "ru": "+="}

# Text render: question, one reasoning sentence per column, conclusion, answer sentence.
TEXT_LANGUAGES = {
    "en": {
        "question": "What is {a} plus {b}?",
        "step": "Adding the digits of column {k} gives {expr}.",
        "sum": "So the sum is {s}.",
        "answer": "The answer is \\boxed{{{s}}}.",
    },
    "zh": {
        "question": "{a} 加 {b} 等于多少？",
        "step": "第 {k} 列的数字相加：{expr}。",
        "sum": "所以两数之和是 {s}。",
        "answer": "答案是 \\boxed{{{s}}}。",
    },
    "fr": {
        "question": "Combien font {a} plus {b} ?",
        "step": "En additionnant les chiffres de la colonne {k}, on obtient {expr}.",
        "sum": "La somme est donc {s}.",
        "answer": "La réponse est \\boxed{{{s}}}.",
    },
    "de": {
        "question": "Wie viel ist {a} plus {b}?",
        "step": "Die Ziffern der Spalte {k} ergeben zusammen {expr}.",
        "sum": "Die Summe ist also {s}.",
        "answer": "Die Antwort ist \\boxed{{{s}}}.",
    },
    "es": {
        "question": "¿Cuánto es {a} más {b}?",
        "step": "Al sumar los dígitos de la columna {k} se obtiene {expr}.",
        "sum": "Por lo tanto, la suma es {s}.",
        "answer": "La respuesta es \\boxed{{{s}}}.",
    },
    "ja": {
        "question": "{a} たす {b} はいくつですか？",
        "step": "{k} 桁目の数字を足すと {expr} になります。",
        "sum": "したがって、和は {s} です。",
        "answer": "答えは \\boxed{{{s}}} です。",
    },
}

CHOICE_LETTERS = "ABCD"
CHOICE_INSTRUCTION = (
    "Reason step by step inside <think></think>, then write the letter of the correct option as "
    "<answer>\\boxed{...}</answer>."
)


# ---- arithmetic helpers ----


def column_terms(operands: Sequence[int]) -> list[tuple[list[int], int]]:
    """Per column, least significant first: the digits present plus any carry, and their sum."""
    digits = [str(x)[::-1] for x in operands]
    columns, carry = [], 0
    for i in range(max(len(d) for d in digits)):
        terms = [int(d[i]) for d in digits if i < len(d)]
        if carry:
            terms.append(carry)
        total = sum(terms)
        columns.append((terms, total))
        carry = total // 10
    return columns


def step_texts(operands: Sequence[int], sep: str = "+", eq: str = "=") -> list[str]:
    return [sep.join(str(t) for t in terms) + eq + str(total) for terms, total in column_terms(operands)]


def carries(operands: Sequence[int]) -> int:
    return sum(1 for _, total in column_terms(operands) if total >= 10)


def dropped_carry_sum(operands: Sequence[int]) -> int:
    """The sum a pupil gets by writing each column's last digit and never carrying."""
    digits = [str(x)[::-1] for x in operands]
    width = max(len(d) for d in digits)
    out = [sum(int(d[i]) for d in digits if i < len(d)) % 10 for i in range(width)]
    return int("".join(str(x) for x in reversed(out)))


def difficulty(operands: Sequence[int]) -> int:
    return carries(operands) + max(len(str(x)) for x in operands) - 2


def _operand(rng: random.Random, three_digit_share: float) -> int:
    return rng.randint(100, 999) if rng.random() < three_digit_share else rng.randint(10, 99)


def _distinct(rng: random.Random, n: int, draw: Callable[[], Hashable]) -> list[Any]:
    """`n` distinct draws, in draw order (so the first ones are the train split)."""
    seen: set[Hashable] = set()
    out = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"could not draw {n} distinct problems; ask for fewer")
        item = draw()
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _pairs(rng: random.Random, n: int, three_digit_share: float) -> list[tuple[int, int]]:
    return _distinct(rng, n, lambda: (_operand(rng, three_digit_share), _operand(rng, three_digit_share)))


def _check_counts(n_train: int, n_eval: int) -> None:
    for name, n in (("n_train", n_train), ("n_eval", n_eval)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {n!r}")


def _check_render(render: str) -> None:
    if render not in RENDERS:
        raise ValueError(f"render must be one of {RENDERS}, got {render!r}")


def _think_answer(think: str, answer: str) -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


def _text_steps(operands: Sequence[int], template: str) -> list[str]:
    return [template.format(k=k, expr=step) for k, step in enumerate(step_texts(operands, " + ", " = "), start=1)]


# ---- multilingual_arithmetic ----


def multilingual_arithmetic(
    n_train: int,
    n_eval: int,
    *,
    seed: int,
    languages: Sequence[str] = ("en", "zh", "fr"),
    render: str = "tiny",
    three_digit_share: float = 0.3,
) -> tuple[list[Sample], list[Sample]]:
    """Addition problems, each posed in every language (see the module docstring)."""
    _check_counts(n_train, n_eval)
    _check_render(render)
    known = LANGUAGE_MARKERS if render == "tiny" else TEXT_LANGUAGES
    languages = list(languages)
    if not languages or len(set(languages)) != len(languages):
        raise ValueError(f"languages must be a non-empty list without repeats, got {languages!r}")
    unknown = [lang for lang in languages if lang not in known]
    if unknown:
        raise ValueError(f"render {render!r} has no language {unknown}; it knows {sorted(known)}")
    rng = random.Random(seed)
    pairs = _pairs(rng, n_train + n_eval, three_digit_share)
    samples = [[_multilingual_sample(a, b, lang, render) for lang in languages] for a, b in pairs]
    train = [s for group in samples[:n_train] for s in group]
    held_out = [s for group in samples[n_train:] for s in group]
    return train, held_out


def _multilingual_sample(a: int, b: int, language: str, render: str) -> Sample:
    s = a + b
    problem_id = f"madd-{a}-{b}"
    metadata: dict[str, Any] = {"language": language, "problem_id": problem_id, "render": render}
    if render == "tiny":
        marker = LANGUAGE_MARKERS[language]
        prompt = f"{marker}{a}+{b}"
        think = ",".join(marker + step for step in step_texts([a, b]))
        target = _think_answer(think, f"{marker}\\boxed{{{s}}}")
        metadata["language_marker"] = marker
        metadata["english_reference"] = ",".join(step_texts([a, b]))
    else:
        words = TEXT_LANGUAGES[language]
        prompt = words["question"].format(a=a, b=b) + "\n\n" + INSTRUCTIONS[language]
        think = " ".join([*_text_steps([a, b], words["step"]), words["sum"].format(s=s)])
        target = _think_answer(think, words["answer"].format(s=s))
        en = TEXT_LANGUAGES["en"]
        metadata["english_reference"] = " ".join([*_text_steps([a, b], en["step"]), en["sum"].format(s=s)])
    metadata["sft_target"] = target
    return Sample(
        prompt=prompt,
        ground_truth=str(s),
        task="multilingual_arithmetic",
        metadata=metadata,
        id=f"{problem_id}-{language}",
    )


# ---- rubric_short_answers ----


def rubric_short_answers(
    n_train: int,
    n_eval: int,
    *,
    seed: int,
    render: str = "tiny",
    three_operand_share: float = 0.3,
    three_digit_share: float = 0.3,
) -> tuple[list[Sample], list[Sample]]:
    """Additions graded by a rubric list plus its rule-checkable form (see the module docstring)."""
    _check_counts(n_train, n_eval)
    _check_render(render)
    rng = random.Random(seed)

    def draw() -> tuple[int, ...]:
        count = 3 if rng.random() < three_operand_share else 2
        return tuple(_operand(rng, three_digit_share) for _ in range(count))

    problems = _distinct(rng, n_train + n_eval, draw)
    samples = [_rubric_sample(ops, render, rng) for ops in problems]
    return samples[:n_train], samples[n_train:]


def _rubric_sample(operands: tuple[int, ...], render: str, rng: random.Random) -> Sample:
    s = sum(operands)
    expr = "+".join(str(x) for x in operands)
    shown = " + ".join(str(x) for x in operands)
    checks: list[dict[str, Any]] = [
        {"check": "answer_equals", "value": str(s), "points": rng.randint(4, 6),
         "criterion": f"States that {shown} = {s}."},
        {"check": "steps_correct", "value": step_texts(operands), "points": rng.randint(2, 3),
         "criterion": "Works through every column of the addition with the right sum and carry, one step per column."},
        {"check": "single_boxed", "value": None, "points": 1,
         "criterion": "Gives exactly one boxed final answer."},
    ]
    if rng.random() < 0.5:
        checks.append({"check": "max_answer_digits", "value": len(str(s)), "points": 1,
                       "criterion": f"Gives a final answer of no more than {len(str(s))} digits."})
    checks.append({"check": "wrong_step", "value": None, "points": -rng.randint(2, 4),
                   "criterion": "Contains an incorrect intermediate sum."})
    dropped = dropped_carry_sum(operands)
    if dropped != s:
        checks.append({"check": "dropped_carry", "value": str(dropped), "points": -rng.randint(1, 3),
                       "criterion": f"Answers {dropped}, the sum with the carries dropped."})
    if render == "tiny":
        prompt = expr
        target = _think_answer(",".join(step_texts(operands)), f"\\boxed{{{s}}}")
    else:
        words = TEXT_LANGUAGES["en"]
        prompt = f"What is {shown}?\n\n{INSTRUCTIONS['en']}"
        think = " ".join([*_text_steps(operands, words["step"]), words["sum"].format(s=s)])
        target = _think_answer(think, words["answer"].format(s=s))
    return Sample(
        prompt=prompt,
        ground_truth=[{"criterion": c["criterion"], "points": c["points"]} for c in checks],
        task="rubric",
        metadata={"rubric_checks": checks, "render": render, "sft_target": target},
        id="rubric-" + "-".join(str(x) for x in operands),
    )


# ---- math_and_choice ----


def math_and_choice(
    n_train: int,
    n_eval: int,
    *,
    seed: int,
    choice_share: float = 0.5,
    render: str = "tiny",
    three_digit_share: float = 0.3,
) -> tuple[list[Sample], list[Sample]]:
    """Addition as `math` and as 4-option `multiple_choice` tasks (see the module docstring)."""
    _check_counts(n_train, n_eval)
    _check_render(render)
    if not 0.0 <= choice_share <= 1.0:
        raise ValueError(f"choice_share must be in [0, 1], got {choice_share!r}")
    rng = random.Random(seed)
    pairs = _pairs(rng, n_train + n_eval, three_digit_share)
    splits = []
    for chunk in (pairs[:n_train], pairs[n_train:]):
        n_choice = round(len(chunk) * choice_share)
        kinds = [True] * n_choice + [False] * (len(chunk) - n_choice)
        rng.shuffle(kinds)
        splits.append([
            _choice_sample(a, b, render, rng) if mc else _math_sample(a, b, render)
            for (a, b), mc in zip(chunk, kinds)
        ])
    return splits[0], splits[1]


def _math_sample(a: int, b: int, render: str) -> Sample:
    s = a + b
    if render == "tiny":
        prompt, target = f"{a}+{b}", _think_answer(",".join(step_texts([a, b])), f"\\boxed{{{s}}}")
    else:
        words = TEXT_LANGUAGES["en"]
        prompt = f"What is {a} + {b}?\n\n{INSTRUCTIONS['en']}"
        think = " ".join([*_text_steps([a, b], words["step"]), words["sum"].format(s=s)])
        target = _think_answer(think, words["answer"].format(s=s))
    metadata = {"difficulty": difficulty([a, b]), "render": render, "sft_target": target}
    return Sample(prompt=prompt, ground_truth=str(s), task="math", metadata=metadata, id=f"math-{a}-{b}")


def distractors(a: int, b: int) -> list[int]:
    """Wrong sums a pupil might give, all >= 10 and different from the sum, in a fixed order."""
    s = a + b
    out = []
    for wrong in (dropped_carry_sum([a, b]), s + 1, s - 1, s + 10, s - 10, s + 100, s - 100, s + 2):
        if wrong >= 10 and wrong != s and wrong not in out:
            out.append(wrong)
    return out


def _choice_sample(a: int, b: int, render: str, rng: random.Random) -> Sample:
    s = a + b
    options = [s, *rng.sample(distractors(a, b), 3)]
    rng.shuffle(options)
    index = options.index(s) + 1
    choices = [str(x) for x in options]
    if render == "tiny":
        prompt = f"{a}+{b}=" + ",".join(choices)
        think = ",".join([*step_texts([a, b]), f"{s}={index}"])
        ground_truth, target = str(index), _think_answer(think, f"\\boxed{{{index}}}")
    else:
        letter = CHOICE_LETTERS[index - 1]
        lines = [f"{CHOICE_LETTERS[i]}. {c}" for i, c in enumerate(choices)]
        prompt = "\n".join([f"What is {a} + {b}?", *lines, "", CHOICE_INSTRUCTION])
        words = TEXT_LANGUAGES["en"]
        think = " ".join([*_text_steps([a, b], words["step"]), f"So the sum is {s}, which is option {letter}."])
        ground_truth, target = letter, _think_answer(think, f"The answer is \\boxed{{{letter}}}.")
    metadata = {
        "choices": choices,
        "answer_index": index,
        "difficulty": difficulty([a, b]),
        "render": render,
        "sft_target": target,
    }
    return Sample(prompt=prompt, ground_truth=ground_truth, task="multiple_choice", metadata=metadata, id=f"mc-{a}-{b}")
