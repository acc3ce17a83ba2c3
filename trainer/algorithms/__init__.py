"""Pure tensor functions for RL post-training, selected by name through registries (plugins.Registry).

Importing this package registers every algorithm plug-in: advantage estimators, policy losses, KL
estimators, loss aggregations and advantage weighting rules.
"""

from plugins.registry import Registry

from .advantages import ADVANTAGES
from .aggregation import AGGREGATIONS, aggregate
from .bpo import auto_think_share, mode_metrics
from .dpo import build_preference_pairs, dpo_loss, dpo_nll_loss
from .filters import FILTER_RULES, mthinker_rejection_filter
from .kl import KL_ESTIMATORS
from .policy_loss import POLICY_LOSSES
from .token_ops import (
    chunked_logprobs_entropy,
    entropy_from_logits,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
)
from .weighting import WEIGHTING_RULES, TaskWeighter


def get_advantage(name: str):
    return ADVANTAGES.get(name)


def get_policy_loss(name: str):
    return POLICY_LOSSES.get(name)


def get_kl(name: str):
    return KL_ESTIMATORS.get(name)


__all__ = [
    "Registry",
    "ADVANTAGES",
    "POLICY_LOSSES",
    "KL_ESTIMATORS",
    "AGGREGATIONS",
    "WEIGHTING_RULES",
    "FILTER_RULES",
    "TaskWeighter",
    "get_advantage",
    "get_policy_loss",
    "get_kl",
    "aggregate",
    "logprobs_from_logits",
    "entropy_from_logits",
    "chunked_logprobs_entropy",
    "masked_sum",
    "masked_mean",
    "dpo_loss",
    "dpo_nll_loss",
    "build_preference_pairs",
    "mthinker_rejection_filter",
    "mode_metrics",
    "auto_think_share",
]
