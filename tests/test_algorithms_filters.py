"""Hand-computed checks for the M-Thinker data filter."""

from trainer.algorithms import mthinker_rejection_filter


def test_mthinker_rejection_filter():
    flags = [
        [True, False, True],  # 2 of 3 -> keep
        [True, True],  # 2 of 2 -> all good, drop
        [False, False, False],  # 0 of 3 -> drop
        [],  # nothing sampled -> drop
        [False, True],  # 1 of 2 -> keep
    ]
    assert mthinker_rejection_filter(flags) == [0, 4]
    assert mthinker_rejection_filter([]) == []
