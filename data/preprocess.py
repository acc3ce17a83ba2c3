r"""Public datasets -> sample rows, by name.

`PREPROCESSORS[name](row, index)` turns one raw row of a public dataset into a sample row (the
schema of `data.schema`); `load_dataset_samples(name, path_or_hub_name)` reads a source the way
`data.sources` does (a `.jsonl`/`.json`/`.parquet` file, a local `datasets` folder, else a Hub
name) and maps every row through it. A row that lacks a column the preprocessor needs raises
`SampleError` naming the source position, the dataset, the 0-based row index and the column.

Columns each preprocessor reads (other columns are kept in `metadata` under their own names):

| name          | needs                                        | optional                                              |
|---------------|----------------------------------------------|-------------------------------------------------------|
| `gsm8k`       | `question`, `answer` ("... #### 72")         |                                                       |
| `math`        | `problem`; `answer` or `solution` with a     | `level` ("Level 3" or 3), `type`, `subject`,          |
|               | `\boxed{...}`                                | `unique_id`                                           |
| `mmath`       | `question`, `answer`, `language` or `lang`   | `problem_id`, else `id`                               |
| `polymath`    | `question`, `answer`, `language` or `lang`,  | `id`, `problem_id`                                    |
|               | `level` or `difficulty` (low/medium/high/top)|                                                       |
| `healthbench` | `prompt` (chat messages or a string),        | `prompt_id`, `example_tags`                           |
|               | `rubrics` ([{criterion, points, tags?}])     |                                                       |

What each produces:

- `gsm8k`: task "gsm8k"; ground truth = the number after `####`, commas removed; the worked
  solution (calculator annotations `<<...>>` removed) becomes `metadata.sft_target`.
- `math`: task "math"; ground truth = the `answer` column (MATH-500) or else the content of the
  last `\boxed{...}` of `solution` (Hendrycks MATH), braces matched with nesting; metadata
  `level` (an int when it has one, and then also `difficulty`), `subject` (the `subject` column,
  else `type`), `type`; the solution becomes `metadata.sft_target`.
- `mmath`: task "mmath"; metadata `language` (ISO 639-1: "zh-CN", "Chinese", "zho" -> "zh") and
  `problem_id` (the `problem_id` or `id` column, which translations of one problem share; else
  `mmath-<row index>`); the sample id is `<problem_id>-<language>`.
- `polymath`: task "polymath"; metadata `language`, `level` (low/medium/high/top) and
  `difficulty` (1-4 for low..top).

`difficulty` is always an int, so one curriculum key orders every dataset (and the synthetic sets).
- `healthbench`: task "medical_rubric"; `messages` = the prompt's chat messages; ground truth =
  the rubric list, each `points` an integer in [-10, 10] (`tags` kept when present).

The Hub copies of PolyMath and MMATH keep the language (and PolyMath the level) in the config,
split or file name rather than in a column: pass them with `defaults`, e.g.
`load_dataset_samples("polymath", "PolyMath/en/low.parquet", defaults={"language": "en", "level": "low"})`.

Math prompts are the question followed by an instruction, in the row's language where we have one
(`INSTRUCTIONS`, English otherwise), to reason inside `<think>` and box the final answer.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from data.answers import last_boxed
from data.language_codes import normalize_language
from data.schema import Sample, SampleError, sample_from_row, validate_rubrics
from data.sources import open_rows
from plugins.registry import Registry

# Each asks for the layout the answer rewards read: <think>...</think><answer>\boxed{...}</answer>.
INSTRUCTIONS = {
    "en": "Reason step by step inside <think></think>, then write the final answer as <answer>\\boxed{...}</answer>.",
    "zh": "请在 <think></think> 中逐步推理，然后以 <answer>\\boxed{...}</answer> 的形式写出最终答案。",
    "fr": "Raisonnez étape par étape dans <think></think>, puis écrivez la réponse finale sous la forme "
    "<answer>\\boxed{...}</answer>.",
    "de": "Denke Schritt für Schritt in <think></think> nach und schreibe dann die endgültige Antwort als "
    "<answer>\\boxed{...}</answer>.",
    "es": "Razona paso a paso dentro de <think></think> y luego escribe la respuesta final como "
    "<answer>\\boxed{...}</answer>.",
    "ja": "<think></think> の中で段階的に考え、最終的な答えを <answer>\\boxed{...}</answer> の形で書いてください。",
    "ru": "Рассуждай шаг за шагом внутри <think></think>, затем запиши окончательный ответ в виде "
    "<answer>\\boxed{...}</answer>.",
}

POLYMATH_LEVELS = ("low", "medium", "high", "top")

Preprocessor = Callable[[dict[str, Any], int], dict[str, Any]]
PREPROCESSORS = Registry("dataset preprocessor", args=2)  # name -> Preprocessor
register_preprocessor = PREPROCESSORS.register


def instruction(language: str | None = "en") -> str:
    return INSTRUCTIONS.get(language or "en", INSTRUCTIONS["en"])


def math_prompt(question: str, language: str | None = "en") -> str:
    return f"{question.strip()}\n\n{instruction(language)}"


def load_dataset_samples(
    name: str,
    path_or_hub_name: str | Path,
    *,
    split: str = "train",
    limit: int | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> list[Sample]:
    """Read a source and map each row through `PREPROCESSORS[name]`; at most `limit` rows.

    `defaults` fills columns a row lacks (or has as null), for datasets that keep e.g. the language
    in the file or config name. Hub names go through `datasets.load_dataset(name, split=split)`
    (no config name), which needs the network or a cached copy.
    """
    try:
        preprocess = PREPROCESSORS.get(name)
    except KeyError as error:
        raise ValueError(error.args[0]) from None
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    samples = []
    rows = open_rows(path_or_hub_name, split)
    for index, (where, row) in enumerate(itertools.islice(rows, limit)):
        if not isinstance(row, dict):
            raise SampleError(f"{where}: {name} row {index} (0-based): expected an object, got {type(row).__name__}")
        if defaults:
            row = {**defaults, **{k: v for k, v in row.items() if v is not None}}
        try:
            sample_row = preprocess(row, index)
        except SampleError as e:
            raise SampleError(f"{where}: {e}") from None
        samples.append(sample_from_row(sample_row, where))
    return samples


# ---- helpers ----


def _row_error(dataset: str, index: int, field: str, why: str = "is missing") -> SampleError:
    return SampleError(f"{dataset} row {index} (0-based): field {field!r} {why}")


def _text(row: dict[str, Any], dataset: str, index: int, *fields: str) -> str:
    """The first of `fields` that holds a non-empty string (numbers are accepted as text)."""
    for field in fields:
        value = row.get(field)
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            value = str(value)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise _row_error(dataset, index, " or ".join(fields), "is missing or empty")


def _extra(row: dict[str, Any], used: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in used and v is not None}


def iso_639_1(code: Any) -> str | None:
    """The two-letter code of a language code or name, with the aliases the language_consistency reward accepts."""
    code = normalize_language(code)
    return code if code is not None and re.fullmatch(r"[a-z]{2}", code) else None


def _language(row: dict[str, Any], dataset: str, index: int) -> str:
    raw = _text(row, dataset, index, "language", "lang")
    code = iso_639_1(raw)
    if code is None:
        raise _row_error(dataset, index, "language", f"is {raw!r}, not a language code or name we know")
    return code


def _sft_target(reasoning: str, answer: str) -> str:
    return f"<think>{reasoning.strip()}</think><answer>\\boxed{{{answer}}}</answer>"


# ---- preprocessors ----

_GSM8K_FINAL = re.compile(r"^[+-]?\d+(?:\.\d+)?$")
_CALCULATOR = re.compile(r"<<[^<>]*>>")


@register_preprocessor("gsm8k")
def gsm8k(row: dict[str, Any], index: int) -> dict[str, Any]:
    question = _text(row, "gsm8k", index, "question")
    answer = _text(row, "gsm8k", index, "answer")
    if "####" not in answer:
        raise _row_error("gsm8k", index, "answer", "has no '#### <number>' final line")
    reasoning, _, final = answer.rpartition("####")
    final = final.strip().replace(",", "").replace("$", "")
    if not _GSM8K_FINAL.match(final):
        raise _row_error("gsm8k", index, "answer", f"ends in '#### {final}', not a number")
    metadata = _extra(row, ("question", "answer"))
    metadata["sft_target"] = _sft_target(_CALCULATOR.sub("", reasoning), final)
    return {
        "prompt": math_prompt(question),
        "ground_truth": final,
        "task": "gsm8k",
        "metadata": metadata,
        "id": f"gsm8k-{index}",
    }


_LEVEL = re.compile(r"^(?:level\s*)?(\d+)$", re.IGNORECASE)


@register_preprocessor("math")
def math_dataset(row: dict[str, Any], index: int) -> dict[str, Any]:
    problem = _text(row, "math", index, "problem")
    solution = row.get("solution") if isinstance(row.get("solution"), str) else None
    answer = row.get("answer")
    answer = str(answer).strip() if isinstance(answer, (str, int, float)) and not isinstance(answer, bool) else ""
    if not answer:
        if solution is None:
            raise _row_error("math", index, "answer or solution")
        answer = last_boxed(solution) or ""
        if not answer:
            raise _row_error("math", index, "solution", "has no complete \\boxed{...} and there is no 'answer'")
    metadata = _extra(row, ("problem", "solution", "answer"))
    level = row.get("level")
    if level is not None:
        match = _LEVEL.match(str(level).strip())
        # "Level ?" occurs in Hendrycks MATH: keep it as given rather than invent a number.
        metadata["level"] = int(match.group(1)) if match else level
        if match:
            metadata["difficulty"] = int(match.group(1))
    subject = row.get("subject") or row.get("type")
    if subject:
        metadata["subject"] = subject
    if solution:
        metadata["sft_target"] = _sft_target(solution, answer)
    return {
        "prompt": math_prompt(problem),
        "ground_truth": answer,
        "task": "math",
        "metadata": metadata,
        "id": str(row.get("unique_id") or f"math-{index}"),
    }


@register_preprocessor("mmath")
def mmath(row: dict[str, Any], index: int) -> dict[str, Any]:
    question = _text(row, "mmath", index, "question")
    answer = _text(row, "mmath", index, "answer")
    language = _language(row, "mmath", index)
    problem_id = row.get("problem_id", row.get("id"))
    problem_id = f"mmath-{index}" if problem_id is None or str(problem_id) == "" else str(problem_id)
    metadata = _extra(row, ("question", "answer", "language", "lang", "problem_id", "id"))
    metadata.update(language=language, problem_id=problem_id)
    return {
        "prompt": math_prompt(question, language),
        "ground_truth": answer,
        "task": "mmath",
        "metadata": metadata,
        "id": f"{problem_id}-{language}",
    }


@register_preprocessor("polymath")
def polymath(row: dict[str, Any], index: int) -> dict[str, Any]:
    question = _text(row, "polymath", index, "question")
    answer = _text(row, "polymath", index, "answer")
    language = _language(row, "polymath", index)
    level = _text(row, "polymath", index, "level", "difficulty").lower()
    if level not in POLYMATH_LEVELS:
        raise _row_error("polymath", index, "level", f"is {level!r}, not one of {', '.join(POLYMATH_LEVELS)}")
    metadata = _extra(row, ("question", "answer", "language", "lang", "level", "difficulty", "id"))
    metadata.update(language=language, level=level, difficulty=POLYMATH_LEVELS.index(level) + 1)
    sample_id = row.get("id")
    return {
        "prompt": math_prompt(question, language),
        "ground_truth": answer,
        "task": "polymath",
        "metadata": metadata,
        "id": str(sample_id) if sample_id is not None else f"polymath-{level}-{language}-{index}",
    }


@register_preprocessor("healthbench")
def healthbench(row: dict[str, Any], index: int) -> dict[str, Any]:
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and prompt:
        messages = []
        for i, message in enumerate(prompt):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not isinstance(
                message.get("content"), str
            ):
                raise _row_error("healthbench", index, f"prompt[{i}]", "must have string 'role' and 'content'")
            messages.append({"role": message["role"], "content": message["content"]})
    else:
        raise _row_error("healthbench", index, "prompt", "is missing or not a string / list of chat messages")
    raw = row.get("rubrics")
    if not isinstance(raw, list) or not raw:
        raise _row_error("healthbench", index, "rubrics", "is missing or not a non-empty list")
    rubrics = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise _row_error("healthbench", index, f"rubrics[{i}]", "is not an object")
        points = item.get("points")
        # Columnar copies give points as floats (7.0); an integral float is the same rubric.
        if isinstance(points, float) and points.is_integer():
            points = int(points)
        rubric = {"criterion": item.get("criterion"), "points": points}
        if item.get("tags") is not None:
            rubric["tags"] = list(item["tags"])
        rubrics.append(rubric)
    try:
        validate_rubrics(rubrics)
    except ValueError as e:
        raise _row_error("healthbench", index, "rubrics", f"is invalid: {e}") from None
    metadata = _extra(row, ("prompt", "rubrics"))
    return {
        "messages": messages,
        "ground_truth": rubrics,
        "task": "medical_rubric",
        "metadata": metadata,
        "id": str(row.get("prompt_id") or f"healthbench-{index}"),
    }
