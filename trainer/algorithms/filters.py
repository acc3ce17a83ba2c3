"""Which queries / groups carry a learning signal.

A group whose completions all got the same reward has zero group-relative advantage, so it
only dilutes the batch. M-Thinker drops such prompts before RL (this filter); DAPO's dynamic
sampling drops them after rollout (`RolloutCollector.collect`, `Rollouts.varied_groups`).
"""

from __future__ import annotations

from plugins.registry import Registry

# fn(passed: per prompt, per sample whether it passed) -> indices of the prompts to keep (`filter.rule`).
FILTER_RULES = Registry("filter rule", args=1)


@FILTER_RULES.register("mthinker")
def mthinker_rejection_filter(correct_and_consistent: list[list[bool]]) -> list[int]:
    """Indices of queries whose n sampled answers are neither all good nor all bad.

    correct_and_consistent[q][i]: whether sample i of query q was both correct and in the
    required language (M-Thinker's data filter). Kept iff 0 < count(True) < n; an empty
    list is dropped.
    """
    keep = []
    for q, flags in enumerate(correct_and_consistent):
        good = sum(bool(f) for f in flags)
        if 0 < good < len(flags):
            keep.append(q)
    return keep
