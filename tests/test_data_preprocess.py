"""Public-dataset preprocessors, on small fixture files in each dataset's own column layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data import SampleError, SourceError
from data.preprocess import INSTRUCTIONS, PREPROCESSORS, load_dataset_samples
from data.schema import validate_rubrics

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"
GSM8K = FIXTURES / "gsm8k" / "main"  # Hub layout: <split>-00000-of-00001.parquet
MATH500 = FIXTURES / "math" / "math500_test.jsonl"
COMPETITION_MATH = FIXTURES / "math" / "competition_math_train.parquet"
MMATH = FIXTURES / "mmath" / "mmath.jsonl"
POLYMATH = FIXTURES / "polymath"
HEALTHBENCH = FIXTURES / "healthbench" / "healthbench_sample.jsonl"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """`datasets` caches inside the test's temp dir, and never the network."""
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return datasets


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_registry_names():
    assert set(PREPROCESSORS) == {"gsm8k", "math", "mmath", "polymath", "healthbench"}
    with pytest.raises(ValueError, match="unknown dataset preprocessor 'gsm9k'.*gsm8k"):
        load_dataset_samples("gsm9k", MATH500)


# ---- gsm8k ----


def test_gsm8k_from_hub_layout_folder(hf_cache):
    train = load_dataset_samples("gsm8k", GSM8K)
    assert [s.ground_truth for s in train] == ["72", "1625", "75"]  # "#### 1,625" loses its comma
    assert {s.task for s in train} == {"gsm8k"}
    assert [s.id for s in train] == ["gsm8k-0", "gsm8k-1", "gsm8k-2"]
    first = train[0]
    assert first.prompt.startswith("A baker makes 24 muffins")
    assert first.prompt.endswith(INSTRUCTIONS["en"]) and "<think>" in first.prompt and "\\boxed" in first.prompt
    assert first.metadata["sft_target"] == (
        "<think>In the afternoon she makes 24 * 2 = 48 muffins.\nIn total she makes 24 + 48 = 72 muffins.</think>"
        "<answer>\\boxed{72}</answer>"
    )
    test = load_dataset_samples("gsm8k", str(GSM8K), split="test", limit=1)
    assert [(s.ground_truth, s.id) for s in test] == [("126", "gsm8k-0")]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"question": "q"}, r"gsm8k row 1 \(0-based\): field 'answer' is missing"),
        ({"answer": "#### 3"}, r"gsm8k row 1 \(0-based\): field 'question' is missing"),
        ({"question": "q", "answer": "it is 3"}, r"field 'answer' has no '#### <number>'"),
        ({"question": "q", "answer": "so #### three"}, r"field 'answer' ends in '#### three', not a number"),
    ],
)
def test_gsm8k_bad_row_names_file_line_row_and_field(tmp_path, row, message):
    path = _write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "q", "answer": "#### 1"}, row])
    with pytest.raises(SampleError, match=message) as info:
        load_dataset_samples("gsm8k", path)
    assert str(info.value).startswith(f"{path}:2: ")


# ---- math ----


def test_math500_uses_answer_column():
    samples = load_dataset_samples("math", MATH500)
    assert [s.ground_truth for s in samples] == ["\\frac{5}{6}", "3"]
    assert [s.id for s in samples] == ["test/prealgebra/1.json", "test/algebra/2.json"]
    assert [(s.metadata["level"], s.metadata["difficulty"], s.metadata["subject"]) for s in samples] == [
        (2, 2, "Prealgebra"),
        (1, 1, "Algebra"),
    ]
    assert samples[0].prompt.startswith("Compute $\\frac{1}{2} + \\frac{1}{3}$.")
    assert {s.task for s in samples} == {"math"}
    assert "unique_id" in samples[0].metadata  # unused columns stay available


def test_hendrycks_math_takes_last_balanced_box():
    samples = load_dataset_samples("math", COMPETITION_MATH)
    # Three boxes in the first solution, nested braces in the last one: the last box wins, whole.
    assert [s.ground_truth for s in samples] == ["\\frac{\\sqrt{16}}{2}", "6", "7"]
    assert [s.metadata["level"] for s in samples] == [2, "Level ?", 1]
    assert "difficulty" not in samples[1].metadata  # "Level ?" has no number to rank by
    assert [s.metadata["subject"] for s in samples] == ["Algebra", "Number Theory", "Prealgebra"]
    assert samples[2].metadata["type"] == "Prealgebra"
    assert samples[2].metadata["sft_target"].endswith("</think><answer>\\boxed{7}</answer>")


@pytest.mark.parametrize(
    "row, field",
    [
        ({"solution": "\\boxed{1}"}, "'problem' is missing"),
        ({"problem": "p"}, "'answer or solution' is missing"),
        ({"problem": "p", "solution": "no box here"}, "'solution' has no complete"),
        ({"problem": "p", "solution": "open \\boxed{1"}, "'solution' has no complete"),
    ],
)
def test_math_bad_rows(row, field):
    with pytest.raises(SampleError, match=rf"math row 4 \(0-based\): field {field}"):
        PREPROCESSORS["math"](row, 4)


# ---- mmath ----


def test_mmath_languages_and_shared_problem_ids():
    samples = load_dataset_samples("mmath", MMATH)
    # "zh-CN" and "French" are normalised; the Chinese row names its language in `lang`.
    assert [s.metadata["language"] for s in samples] == ["en", "zh", "fr", "ja"]
    assert [s.metadata["problem_id"] for s in samples] == ["aime-7", "aime-7", "aime-7", "mmath-3"]
    assert [s.id for s in samples] == ["aime-7-en", "aime-7-zh", "aime-7-fr", "mmath-3-ja"]
    assert [s.ground_truth for s in samples] == ["2", "2", "2", "\\frac{1}{2}"]
    assert {s.task for s in samples} == {"mmath"}
    assert samples[1].prompt.endswith(INSTRUCTIONS["zh"]) and samples[2].prompt.endswith(INSTRUCTIONS["fr"])
    assert samples[0].metadata["data_source"] == "aime"
    assert "lang" not in samples[1].metadata


def test_mmath_save_to_disk_folder_matches_jsonl(tmp_path, hf_cache):
    datasets = hf_cache
    folder = tmp_path / "mmath_saved"
    rows = _rows(MMATH)
    columns = sorted({key for row in rows for key in row})
    # from_list takes its columns from the first row: give every row every column (null when absent).
    table = datasets.Dataset.from_list([{key: row.get(key) for key in columns} for row in rows])
    datasets.DatasetDict({"test": table}).save_to_disk(str(folder))
    from_folder = load_dataset_samples("mmath", folder, split="test")
    assert from_folder == load_dataset_samples("mmath", MMATH)


def test_mmath_language_errors():
    with pytest.raises(SampleError, match=r"mmath row 0 \(0-based\): field 'language or lang' is missing"):
        PREPROCESSORS["mmath"]({"question": "q", "answer": "1"}, 0)
    with pytest.raises(SampleError, match=r"field 'language' is 'Klingon', not a language code"):
        PREPROCESSORS["mmath"]({"question": "q", "answer": "1", "language": "Klingon"}, 0)


# ---- polymath ----


def test_polymath_hub_layout_with_defaults():
    en = load_dataset_samples("polymath", POLYMATH / "en" / "low.parquet", defaults={"language": "en", "level": "low"})
    zh = load_dataset_samples("polymath", POLYMATH / "zh" / "low.parquet", defaults={"language": "zh", "level": "low"})
    assert [s.id for s in en + zh] == ["low-en-0", "low-en-1", "low-zh-0", "low-zh-1"]
    assert [s.ground_truth for s in en] == [s.ground_truth for s in zh] == ["144", "180"]
    assert {(s.metadata["language"], s.metadata["level"], s.metadata["difficulty"]) for s in zh} == {("zh", "low", 1)}
    assert zh[0].prompt.startswith("$12 \\times 12$ 等于多少？") and zh[0].prompt.endswith(INSTRUCTIONS["zh"])
    assert {s.task for s in en + zh} == {"polymath"}


def test_polymath_without_language_names_row_and_field():
    message = r"low\.parquet:row 0 \(0-based\): polymath row 0 \(0-based\): field 'language or lang'"
    with pytest.raises(SampleError, match=message):
        load_dataset_samples("polymath", POLYMATH / "en" / "low.parquet")


def test_polymath_columns_and_levels():
    row = {"question": "q", "answer": "5", "lang": "de", "difficulty": "TOP", "problem_id": "p9"}
    out = PREPROCESSORS["polymath"](row, 3)
    assert out["metadata"] == {"language": "de", "level": "top", "difficulty": 4, "problem_id": "p9"}
    assert out["id"] == "polymath-top-de-3"
    levels = ("low", "medium", "high", "top")
    ranks = [PREPROCESSORS["polymath"]({**row, "difficulty": lvl}, 0)["metadata"]["difficulty"] for lvl in levels]
    assert ranks == [1, 2, 3, 4]
    with pytest.raises(SampleError, match=r"field 'level' is 'extreme', not one of low, medium, high, top"):
        PREPROCESSORS["polymath"]({**row, "difficulty": "extreme"}, 0)


# ---- healthbench ----


def test_healthbench_messages_and_rubrics():
    samples = load_dataset_samples("healthbench", HEALTHBENCH)
    raw = _rows(HEALTHBENCH)
    assert [s.id for s in samples] == ["hb-0001", "hb-0002"]
    assert {s.task for s in samples} == {"medical_rubric"}
    assert all(s.prompt is None for s in samples)
    assert samples[1].messages == raw[1]["prompt"]  # the multi-turn conversation is kept as is
    assert [m["role"] for m in samples[1].messages] == ["user", "assistant", "user"]
    for sample, row in zip(samples, raw):
        assert validate_rubrics(sample.ground_truth) == sample.ground_truth
        assert [(r["criterion"], r["points"]) for r in sample.ground_truth] == [
            (r["criterion"], r["points"]) for r in row["rubrics"]
        ]
        assert all(type(r["points"]) is int for r in sample.ground_truth)
    assert samples[0].ground_truth[2]["points"] == -7
    assert samples[0].ground_truth[0]["tags"] == ["level:example", "axis:accuracy"]
    assert samples[0].metadata == {"prompt_id": "hb-0001", "example_tags": ["theme:emergency_referrals"]}


def test_healthbench_string_prompt_and_float_points():
    row = {"prompt": "Is 38.5 C a fever?", "rubrics": [{"criterion": "Says yes.", "points": 7.0}]}
    out = PREPROCESSORS["healthbench"](row, 0)
    assert out["messages"] == [{"role": "user", "content": "Is 38.5 C a fever?"}]
    assert out["ground_truth"] == [{"criterion": "Says yes.", "points": 7}]
    assert type(out["ground_truth"][0]["points"]) is int
    assert out["id"] == "healthbench-0"


@pytest.mark.parametrize(
    "row, message",
    [
        ({"rubrics": [{"criterion": "c", "points": 1}]}, "field 'prompt' is missing"),
        ({"prompt": [{"role": "user"}], "rubrics": [{"criterion": "c", "points": 1}]}, r"'prompt\[0\]' must have"),
        ({"prompt": "p"}, "field 'rubrics' is missing"),
        ({"prompt": "p", "rubrics": [{"criterion": "c", "points": 11}]}, "points' must be an integer in \\[-10, 10\\]"),
        ({"prompt": "p", "rubrics": [{"criterion": "c", "points": 2.5}]}, "points' must be an integer"),
        ({"prompt": "p", "rubrics": [{"criterion": "", "points": 2}]}, "'criterion' must be a non-empty string"),
        ({"prompt": "p", "rubrics": ["c"]}, r"field 'rubrics\[0\]' is not an object"),
    ],
)
def test_healthbench_bad_rows(row, message):
    with pytest.raises(SampleError, match=rf"healthbench row 2 \(0-based\): .*{message}"):
        PREPROCESSORS["healthbench"](row, 2)


def test_healthbench_parquet_copy_matches_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "healthbench.parquet"
    pq.write_table(pa.Table.from_pylist(_rows(HEALTHBENCH)), path)
    assert load_dataset_samples("healthbench", path) == load_dataset_samples("healthbench", HEALTHBENCH)


# ---- loading ----


def test_limit_and_errors(tmp_path):
    assert [s.id for s in load_dataset_samples("mmath", MMATH, limit=2)] == ["aime-7-en", "aime-7-zh"]
    assert load_dataset_samples("mmath", MMATH, limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        load_dataset_samples("mmath", MMATH, limit=-1)
    with pytest.raises(FileNotFoundError):
        load_dataset_samples("gsm8k", tmp_path / "missing.jsonl")


def test_hub_name_offline_surfaces_source_error(hf_cache):
    with pytest.raises(SourceError) as info:
        load_dataset_samples("gsm8k", "no-such-org-0x/no-such-gsm8k-0x", split="test")
    assert "'no-such-org-0x/no-such-gsm8k-0x'" in str(info.value) and "local copy" in str(info.value)
