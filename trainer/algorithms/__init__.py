"""Pure tensor functions for RL post-training, selected by name through registries."""

from . import advantages as _advantages  # noqa: F401  (registers estimators)
from . import kl as _kl  # noqa: F401
from . import policy_loss as _policy_loss  # noqa: F401
from .aggregation import aggregate
from .bpo import (
    NON_THINKING_PREFIX,
    THINKING_PREFIX,
    apply_thinking_mode,
    auto_think_share,
    bpo_advantages,
    bpo_group_index,
    mode_metrics,
)
from .dpo import build_preference_pairs, dpo_loss, dpo_nll_loss
from .filters import DynamicSamplingBuffer, dynamic_sampling_keep, mthinker_rejection_filter
from .registry import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES, Registry
from .token_ops import (
    chunked_logprobs_entropy,
    entropy_from_logits,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_whiten,
)


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
    "get_advantage",
    "get_policy_loss",
    "get_kl",
    "aggregate",
    "logprobs_from_logits",
    "entropy_from_logits",
    "chunked_logprobs_entropy",
    "masked_sum",
    "masked_mean",
    "masked_whiten",
    "dpo_loss",
    "dpo_nll_loss",
    "build_preference_pairs",
    "mthinker_rejection_filter",
    "dynamic_sampling_keep",
    "DynamicSamplingBuffer",
    "THINKING_PREFIX",
    "NON_THINKING_PREFIX",
    "bpo_group_index",
    "bpo_advantages",
    "mode_metrics",
    "auto_think_share",
    "apply_thinking_mode",
]
