"""The sample schema: one training example as every part of the framework sees it.

A row in any source (JSONL, Parquet, a `datasets` split) becomes a `Sample`:

| field          | type                         | meaning                                                        |
|----------------|------------------------------|----------------------------------------------------------------|
| `prompt`       | str                          | plain-text prompt (used as is, no chat template)               |
| `messages`     | list of {role, content}      | chat messages; give this or `prompt`, not both                 |
| `ground_truth` | any JSON value               | what rewards compare against (answer, box, rubric list, ...)   |
| `task`         | str, default "default"       | task name: selects the reward mix and per-task metrics         |
| `images`       | list of str                  | local image paths (multimodal recipes); empty for text         |
| `metadata`     | dict                         | anything else (language, choices, difficulty, ...)             |
| `id`           | str or None                  | stable identifier, used in error messages and logs             |

Unknown top-level keys in a row are moved into `metadata`, so a dataset's own
columns (e.g. `language`, `choices`) reach rewards without schema changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SAMPLE_FIELDS = ("prompt", "messages", "ground_truth", "task", "images", "metadata", "id")
RUBRIC_POINTS = (-10, 10)
"What one rubric criterion may be worth, as HealthBench and the rubric reward read it."


class SampleError(ValueError):
    """A row that does not fit the schema; the message names where it came from."""


@dataclass
class Sample:
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    ground_truth: Any = None
    task: str = "default"
    images: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def field(self, key: str, default: Any = None) -> Any:
        """A schema field or, failing that, a metadata entry (how rewards read dataset columns)."""
        if key in SAMPLE_FIELDS:
            return getattr(self, key)
        return self.metadata.get(key, default)


def sample_from_row(row: dict[str, Any], where: str = "<row>") -> Sample:
    """Validate one raw row and build a Sample. `where` (e.g. "train.jsonl:12") goes into errors."""
    if not isinstance(row, dict):
        raise SampleError(f"{where}: expected an object with sample fields, got {type(row).__name__}")
    prompt, messages = row.get("prompt"), row.get("messages")
    if prompt is None and messages is None:
        raise SampleError(f"{where}: field 'prompt' or 'messages' is required")
    if prompt is not None and messages is not None:
        raise SampleError(f"{where}: give either 'prompt' or 'messages', not both")
    if prompt is not None and not isinstance(prompt, str):
        raise SampleError(f"{where}: field 'prompt' must be a string, got {type(prompt).__name__}")
    if messages is not None:
        if not isinstance(messages, list) or not messages:
            raise SampleError(f"{where}: field 'messages' must be a non-empty list of {{role, content}}")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise SampleError(f"{where}: field 'messages[{i}]' must have 'role' and 'content'")
    task = row.get("task", "default")
    if not isinstance(task, str) or not task:
        raise SampleError(f"{where}: field 'task' must be a non-empty string")
    images = row.get("images") or []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise SampleError(f"{where}: field 'images' must be a list of paths")
    metadata = row.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise SampleError(f"{where}: field 'metadata' must be an object")
    metadata = dict(metadata)
    for key, value in row.items():
        if key not in SAMPLE_FIELDS:
            metadata[key] = value
    sample_id = row.get("id")
    return Sample(
        prompt=prompt,
        messages=messages,
        ground_truth=row.get("ground_truth"),
        task=task,
        images=list(images),
        metadata=metadata,
        id=None if sample_id is None else str(sample_id),
    )


def validate_rubrics(rubrics: Any) -> list[dict[str, Any]]:
    """A rubric list (ground truth of the rubric rewards), checked; ValueError names the first problem."""
    if not isinstance(rubrics, list) or not rubrics:
        raise ValueError("rubrics must be a non-empty list of {criterion, points}")
    low, high = RUBRIC_POINTS
    for i, item in enumerate(rubrics):
        if not isinstance(item, dict):
            raise ValueError(f"rubric {i}: expected a mapping, got {type(item).__name__}")
        criterion, points = item.get("criterion"), item.get("points")
        if not isinstance(criterion, str) or not criterion.strip():
            raise ValueError(f"rubric {i}: 'criterion' must be a non-empty string")
        if isinstance(points, bool) or not isinstance(points, int) or not low <= points <= high:
            raise ValueError(f"rubric {i}: 'points' must be an integer in [{low}, {high}], got {points!r}")
    if all(item["points"] == 0 for item in rubrics):
        raise ValueError("rubrics: every criterion is worth 0 points, nothing to score")
    return rubrics
