import itertools
import random

import pytest

from data.schema import Sample
from rewards import get_reward
from rewards.spatial import best_matching, gold_boxes, iou, parse_boxes, spatial_iou


def si(completion, gold, **params):
    return spatial_iou(completion, Sample(prompt="", ground_truth=gold), **params)


def test_iou_by_hand():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    # Overlap 5x10 = 50; union 100 + 100 - 50 = 150.
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    assert iou((0, 0, 10, 10), None) == 0.0


@pytest.mark.parametrize("answer", [
    "[0, 0, 10, 10]",
    '{"bbox_2d": [0, 0, 10, 10], "label": "cat"}',
    '```json\n[{"bbox_2d": [0, 0, 10, 10], "label": "cat"}]\n```',
    "(0,0),(10,10)",
    "The box is (0, 0) to (10, 10).",
    "[0.0, 0.0, 1e1, 10.]",
])
def test_box_formats(answer):
    out = si(f"<think>looking</think><answer>{answer}</answer>", [0, 0, 10, 10])
    assert out.score == 1.0, out.details


def test_partial_overlap():
    assert si("<answer>[5, 0, 15, 10]</answer>", [0, 0, 10, 10]).score == pytest.approx(1 / 3)


@pytest.mark.parametrize("answer", [
    "[10, 0, 0, 10]",                      # x2 <= x1
    "[0, 5, 10, 5]",                       # y2 <= y1
    '{"bbox_2d": [NaN, 0, 10, 10]}',
    '{"bbox_2d": [0, 0, 10]}',             # 3 numbers
    '{"bbox_2d": [0, 0, 10, 10, 4]}',      # 5 numbers
    '{"bbox_2d": ["a", 0, 10, 10]}',
    "[0, 0, 10]",                          # no 4-number box at all
    "no box here",
])
def test_invalid_boxes_score_zero(answer):
    assert si(f"<answer>{answer}</answer>", [0, 0, 10, 10]).score == 0.0


def test_box_in_thinking_is_ignored():
    out = si("<think>maybe [0, 0, 10, 10]</think>I am not sure.", [0, 0, 10, 10])
    assert out.score == 0.0 and out.details["reason"] == "no box in the answer"
    assert si("<think>[0, 0, 10, 10]", [0, 0, 10, 10]).score == 0.0  # unterminated thinking


def test_several_boxes_one_to_one():
    gold = [[0, 0, 10, 10], [20, 0, 30, 10]]
    # Both found, in the other order: perfect.
    assert si("<answer>[20, 0, 30, 10], [0, 0, 10, 10]</answer>", gold).score == 1.0
    # One exact, one missing: 1 / 2.
    assert si("<answer>[0, 0, 10, 10]</answer>", gold).score == pytest.approx(0.5)
    # The same box twice cannot match both gold boxes: (1 + 0) / 2.
    assert si("<answer>[0, 0, 10, 10] [0, 0, 10, 10]</answer>", gold).score == pytest.approx(0.5)
    # Three predictions for two gold boxes: the extra one costs, (1 + 1) / 3.
    assert si("<answer>[0, 0, 10, 10] [20, 0, 30, 10] [50, 50, 60, 60]</answer>", gold).score == pytest.approx(2 / 3)
    # An invalid prediction counts as a prediction: (1 + 0) / 2.
    assert si("<answer>[0, 0, 10, 10] [30, 0, 20, 10]</answer>", gold).score == pytest.approx(0.5)


def test_matching_beats_greedy():
    # Greedy would pair p0 with g0 (0.6) and leave p1 with g1 (0.0); the best pairing is 0.5 + 0.5.
    matrix = [[0.6, 0.5], [0.5, 0.0]]
    pairs = best_matching(matrix)
    assert sorted(pairs) == [(0, 1), (1, 0)]


def test_matching_is_exact_on_random_matrices():
    rng = random.Random(0)
    for _ in range(200):
        n, m = rng.randint(1, 5), rng.randint(1, 5)
        matrix = [[rng.choice([0.0, rng.random()]) for _ in range(m)] for _ in range(n)]
        pairs = best_matching(matrix)
        assert len(pairs) == min(n, m)
        assert len({r for r, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)
        assert sum(matrix[r][c] for r, c in pairs) == pytest.approx(brute_force_matching(matrix))


def test_ground_truth_forms():
    assert gold_boxes([1, 2, 3, 4]) == [(1.0, 2.0, 3.0, 4.0)]
    assert gold_boxes([[1, 2, 3, 4], [5, 6, 7, 8]]) == [(1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0)]
    assert gold_boxes({"bbox_2d": [1, 2, 3, 4]}) == [(1.0, 2.0, 3.0, 4.0)]
    assert gold_boxes("[1, 2, 3, 4]") == [(1.0, 2.0, 3.0, 4.0)]
    assert gold_boxes(None) is None
    assert si("<answer>[0, 0, 10, 10]</answer>", [3, 3, 1, 1]).details["reason"].startswith("ground_truth")
    assert si("<answer>[0, 0, 10, 10]</answer>", "cat").score == 0.0


def test_parse_boxes_prefers_bbox_2d():
    boxes, fmt = parse_boxes('[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 6, 7, 8]}]')
    assert fmt == "bbox_2d" and boxes == [(1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0)]


def test_too_many_boxes():
    answer = "<answer>" + " ".join("[0, 0, 10, 10]" for _ in range(5)) + "</answer>"
    assert si(answer, [0, 0, 10, 10], max_boxes=4).score == 0.0
    assert si(answer, [0, 0, 10, 10]).score == pytest.approx(1 / 5)
    with pytest.raises(ValueError):
        get_reward("spatial_iou").check_params({"max_boxes": 0})


def brute_force_matching(matrix: list[list[float]]) -> float:
    """Best total by trying every assignment (for checking ``best_matching`` on small inputs)."""
    n, m = len(matrix), len(matrix[0]) if matrix else 0
    if n == 0 or m == 0:
        return 0.0
    if n <= m:
        return max(sum(matrix[r][c] for r, c in enumerate(cols)) for cols in itertools.permutations(range(m), n))
    return max(sum(matrix[r][c] for c, r in enumerate(rows)) for rows in itertools.permutations(range(n), m))
