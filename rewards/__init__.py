"""Rewards: the registry, the built-in rewards, parallel scoring and per-task composition.

Importing this package registers the built-in rewards: ``boxed_answer``, ``format``,
``language_consistency``, ``multiple_choice``, ``numeric``, ``spatial_iou``, and the judge-based
``rubric`` and ``cross_lingual_alignment``; and the group transforms ``length_bonus`` and
``overlong_penalty``. Advantage weighting rules live with the algorithms (``trainer.algorithms.weighting``).
"""

from rewards.base import REWARDS, RewardOutput, RewardSpec, get_reward, list_rewards, register_reward
from rewards import choice, cross_lingual, format, language, math_answer, numeric, rubric, spatial  # noqa: F401,E402 - registration side effects
from rewards import group_transforms  # noqa: F401,E402
from rewards.compose import RewardBatch, RewardComposer  # noqa: E402
from rewards.executor import RewardExecutor  # noqa: E402

__all__ = [
    "REWARDS",
    "RewardBatch",
    "RewardComposer",
    "RewardExecutor",
    "RewardOutput",
    "RewardSpec",
    "get_reward",
    "list_rewards",
    "register_reward",
]
