r"""``spatial_iou``: overlap between predicted and ground-truth bounding boxes (grounding tasks).

Boxes are ``[x1, y1, x2, y2]`` (top-left, bottom-right, any consistent unit). Numbers are read with
regular expressions only; nothing in a completion is evaluated.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Sequence

from data.answers import answer_region
from data.schema import Sample
from rewards.base import RewardOutput, register_reward

Box = tuple[float, float, float, float]

_NUM = r"[+-]?(?:\d{1,12}(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?"
_NUM_RE = re.compile(rf"\s*({_NUM})\s*")
# Qwen2.5-VL grounding JSON: {"bbox_2d": [x1, y1, x2, y2], "label": ...}; the list is captured raw
# (any length, any tokens) so that malformed boxes are seen and score 0 rather than being skipped.
_BBOX_2D_RE = re.compile(r"[\"']bbox_2d[\"']\s*:\s*\[([^\[\]]{0,400})\]")
_BRACKET_RE = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")
# Between the two points: ``\s*(?:,\s*)?(?:(?:to|-|and)\s*)?`` rather than ``\s*,?\s*(?:to|-|and)?\s*``, which
# matches the same text but tries every split of a run of spaces (cubic: "(0,0)" + 100k spaces hangs).
_PAIR_RE = re.compile(
    rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*(?:,\s*)?(?:(?:to|-|and)\s*)?\(\s*({_NUM})\s*,\s*({_NUM})\s*\)"
)


def _as_box(values: Sequence[Any]) -> Box | None:
    """A valid box from 4 finite numbers with x2 > x1 and y2 > y1, else None."""
    if len(values) != 4:
        return None
    numbers = []
    for value in values:
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            match = _NUM_RE.fullmatch(value)
            if match is None:
                return None
            value = float(match.group(1))
        if not isinstance(value, (int, float)):
            return None
        value = float(value)
        if not math.isfinite(value):
            return None
        numbers.append(value)
    x1, y1, x2, y2 = numbers
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def parse_boxes(text: str) -> tuple[list[Box | None], str]:
    """Boxes in ``text`` in order (None for an invalid one) and the format found.

    Formats, the first one present wins: ``"bbox_2d": [...]`` entries, ``[x1, y1, x2, y2]`` lists,
    ``(x1, y1), (x2, y2)`` point pairs.
    """
    entries = _BBOX_2D_RE.findall(text)
    if entries:
        return [_as_box(entry.split(",")) for entry in entries], "bbox_2d"
    lists = _BRACKET_RE.findall(text)
    if lists:
        return [_as_box(groups) for groups in lists], "list"
    pairs = _PAIR_RE.findall(text)
    if pairs:
        return [_as_box(groups) for groups in pairs], "points"
    return [], "none"


def gold_boxes(ground_truth: Any) -> list[Box | None] | None:
    """Ground truth as one box, a list of boxes, ``{"bbox_2d": box}`` (or a list of those), or text
    holding any format ``parse_boxes`` reads. None when nothing box-like is there.
    """
    value = ground_truth
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            boxes, _ = parse_boxes(value)
            return boxes or None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        return None
    if all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value):
        return [_as_box(value)]
    boxes: list[Box | None] = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("bbox_2d", item.get("bbox"))
        boxes.append(_as_box(item) if isinstance(item, (list, tuple)) else None)
    return boxes


def iou(a: Box | None, b: Box | None) -> float:
    if a is None or b is None:
        return 0.0
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _assignment_min_cost(cost: list[list[float]]) -> list[int]:
    """Column for each row minimising total cost, rows <= columns (Hungarian method with potentials,
    O(rows^2 * columns))."""
    n, m = len(cost), len(cost[0])
    inf = float("inf")
    u, v = [0.0] * (n + 1), [0.0] * (m + 1)
    row_of = [0] * (m + 1)  # 1-based row matched to each column; column 0 is a sentinel
    previous = [0] * (m + 1)
    for row in range(1, n + 1):
        row_of[0] = row
        col = 0
        best = [inf] * (m + 1)
        done = [False] * (m + 1)
        while True:
            done[col] = True
            r, delta, next_col = row_of[col], inf, 0
            for j in range(1, m + 1):
                if done[j]:
                    continue
                reduced = cost[r - 1][j - 1] - u[r] - v[j]
                if reduced < best[j]:
                    best[j], previous[j] = reduced, col
                if best[j] < delta:
                    delta, next_col = best[j], j
            for j in range(m + 1):
                if done[j]:
                    u[row_of[j]] += delta
                    v[j] -= delta
                else:
                    best[j] -= delta
            col = next_col
            if row_of[col] == 0:
                break
        while col:  # flip the augmenting path
            prior = previous[col]
            row_of[col] = row_of[prior]
            col = prior
    assignment = [-1] * n
    for j in range(1, m + 1):
        if row_of[j]:
            assignment[row_of[j] - 1] = j - 1
    return assignment


def best_matching(matrix: list[list[float]]) -> list[tuple[int, int]]:
    """One-to-one ``(row, column)`` pairs maximising the sum of ``matrix`` entries (exact)."""
    if not matrix or not matrix[0]:
        return []
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        linear_sum_assignment = None
    if linear_sum_assignment is not None:
        rows, cols = linear_sum_assignment(matrix, maximize=True)
        return [(int(r), int(c)) for r, c in zip(rows, cols)]
    n, m = len(matrix), len(matrix[0])
    if n <= m:
        cols = _assignment_min_cost([[-x for x in row] for row in matrix])
        return [(r, c) for r, c in enumerate(cols)]
    rows = _assignment_min_cost([[-matrix[r][c] for r in range(n)] for c in range(m)])
    return sorted((r, c) for c, r in enumerate(rows))


def _validate(params: dict[str, Any]) -> None:
    max_boxes = params.get("max_boxes", 100)
    if isinstance(max_boxes, bool) or not isinstance(max_boxes, int) or max_boxes < 1:
        raise ValueError("spatial_iou: max_boxes must be a positive integer")


@register_reward("spatial_iou", validate=_validate)
def spatial_iou(
    completion: str,
    sample: Sample,
    *,
    require_answer_tag: bool = False,
    max_boxes: int = 100,
) -> RewardOutput:
    r"""IoU of the predicted box(es) with ``sample.ground_truth``, in [0, 1].

    Boxes are read from the answer region only (``<answer>`` block, else after ``</think>``; never the
    thinking), as Qwen2.5-VL ``{"bbox_2d": [x1, y1, x2, y2]}`` objects (alone or in a list), plain
    ``[x1, y1, x2, y2]`` lists, or ``(x1, y1), (x2, y2)`` corner pairs; the first of these formats
    present is used. A box that is not 4 finite numbers with x2 > x1 and y2 > y1 is invalid and
    overlaps nothing. The ground truth is one box, a list of boxes, or ``bbox_2d`` objects.
    Several boxes: the one-to-one matching with the largest total IoU is found and the score is
    that total / max(#predicted, #ground truth), so missing and extra boxes both cost. More than
    ``max_boxes`` predicted boxes score 0.
    """
    golds = gold_boxes(sample.ground_truth)
    if not golds or any(box is None for box in golds):
        return RewardOutput(0.0, {"reason": "ground_truth is not a valid box or list of boxes"})
    region, where = answer_region(completion, require_answer_tag)
    if region is None:
        return RewardOutput(0.0, {"reason": where})
    preds, fmt = parse_boxes(region)
    details: dict[str, Any] = {"region": where, "format": fmt, "num_pred": len(preds), "num_gt": len(golds)}
    if not preds:
        details["reason"] = "no box in the answer"
        return RewardOutput(0.0, details)
    if len(preds) > max_boxes:
        details["reason"] = f"more than {max_boxes} predicted boxes"
        return RewardOutput(0.0, details)
    details["pred"] = [list(b) if b is not None else None for b in preds[:10]]
    matrix = [[iou(p, g) for g in golds] for p in preds]
    pairs = best_matching(matrix)
    matched = [matrix[r][c] for r, c in pairs]
    score = sum(matched) / max(len(preds), len(golds))
    details["matched_ious"] = [round(x, 4) for x in matched[:10]]
    invalid = sum(b is None for b in preds)
    details["reason"] = f"{invalid} invalid predicted box(es)" if invalid else "ok"
    return RewardOutput(min(1.0, max(0.0, score)), details)
