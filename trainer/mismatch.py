"""The mismatch budget: a bound on how far the rollout engine's log-probs may drift from the trainer's.

Each RL step reports `logp_mismatch` (mean |rollout - trainer| log-prob per response token). Over the
last WINDOW steps its mean is compared with algorithm.mismatch_budget; past it, the run either turns
rollout correction on from then on (mismatch_action=correct) or stops naming the likely causes (stop).
"""

from __future__ import annotations

from dataclasses import dataclass, field

WINDOW = 5  # steps: one noisy step should not trip the budget


class MismatchBudgetError(RuntimeError):
    """The running mismatch exceeded algorithm.mismatch_budget with mismatch_action=stop."""


def likely_causes(cfg) -> str:
    """The usual reasons the two sides disagree, with what this run's config says about each."""
    rollout = cfg.rollout
    sampling = (f"top_p={rollout.top_p}, top_k={rollout.top_k}" if rollout.top_p < 1 or rollout.top_k > 0
                else "full-distribution sampling")
    return (f"model.dtype={cfg.model.dtype} (low precision on either side widens the gap; the engine and the "
            f"trainer may also run different kernels); the rollout engine ({rollout.engine}) or its version "
            f"computing log-probs differently; sampling settings ({sampling}, temperature={rollout.temperature}) "
            "that the engine's log-probs include and the trainer's do not; weights not synced after an update")


@dataclass
class MismatchBudget:
    budget: float | None
    action: str = "correct"
    causes: str = ""  # `likely_causes(cfg)`, for the stop message
    recent: list[float] = field(default_factory=list)
    correcting: bool = False  # set once the budget was exceeded with action=correct

    def observe(self, mismatch: float) -> str | None:
        """Record a step's mismatch; returns the line to print when the budget is first exceeded (action=correct),
        raises RuntimeError for action=stop, None otherwise."""
        if self.budget is None or mismatch != mismatch:  # no budget, or no measurement (nan)
            return None
        self.recent = (self.recent + [mismatch])[-WINDOW:]
        running = sum(self.recent) / len(self.recent)
        if running <= self.budget or self.correcting:
            return None
        said = (f"the rollout/trainer log-prob mismatch averaged {running:.4g} per token over the last "
                f"{len(self.recent)} steps, above algorithm.mismatch_budget={self.budget:g}")
        if self.action == "stop":
            raise MismatchBudgetError(f"{said} (algorithm.mismatch_action=stop). Likely causes: {self.causes}")
        self.correcting = True
        return f"{said}: rollout correction is on from here (algorithm.rollout_correction, decoupled)"

    def state_dict(self) -> dict:
        return {"recent": list(self.recent), "correcting": self.correcting}

    def load_state_dict(self, state: dict) -> None:
        self.recent, self.correcting = list(state["recent"]), bool(state["correcting"])
