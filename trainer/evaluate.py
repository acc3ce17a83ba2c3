"""Held-out evaluation, in training and in `python -m trainer eval`: greedy accuracy per task and overall,
and from k samples per prompt avg@k, pass@k (unbiased) and maj@k, with per-task and per-language tables.
Both paths generate and score through the same functions, so their numbers agree."""

from __future__ import annotations

from collections import Counter
from math import comb

import numpy as np

from data.schema import Sample
from rewards.math_answer import final_boxed
from trainer.algorithms.bpo import auto_think_share
from trainer.collect import RolloutCollector
from trainer.rollout.sampling import SamplingSpec
from trainer.rollouts import Rollouts


def thinking_mode(collector: RolloutCollector) -> str:
    """The forced thinking-mode prefix of `rollout.eval_thinking_mode` (R-4B's auto / long / short)."""
    return {"auto": "", "long": "thinking", "short": "non_thinking"}[collector.cfg.rollout.eval_thinking_mode]


def generate(collector: RolloutCollector, samples: list[Sample], spec: SamplingSpec) -> Rollouts:
    """spec.n scored completions per sample, `evaluation.batch_prompts` prompts per engine call."""
    size = collector.cfg.evaluation.batch_prompts
    return Rollouts.concat([collector.sample(samples[start:start + size], spec, thinking_mode(collector),
                                             first_index=start) for start in range(0, len(samples), size)])


def greedy(collector: RolloutCollector, samples: list[Sample]) -> Rollouts:
    rollout = collector.cfg.rollout
    spec = SamplingSpec(n=1, temperature=0.0, max_new_tokens=rollout.eval_max_new_tokens,
                        stop_token_ids=collector.prompts.chat.stop_ids, seed=0)
    return generate(collector, samples, spec)


def auto_mode(collector: RolloutCollector) -> bool:
    """Whether evaluation leaves the thinking mode to the policy (BPO recipes in `eval_thinking_mode=auto`)."""
    return bool(collector.cfg.rollout.modes) and not thinking_mode(collector)


def evaluate(collector: RolloutCollector, samples: list[Sample]) -> dict[str, float]:
    """Greedy accuracy on `samples`, in `rollout.eval_thinking_mode`."""
    return greedy_metrics(greedy(collector, samples), auto_mode(collector))


def greedy_metrics(rollouts: Rollouts, auto_thinking: bool = False) -> dict[str, float]:
    items, samples = rollouts.items, rollouts.samples
    texts, correct = [r.text for r in items], [r.correct for r in items]
    result = {"eval/acc": float(np.mean(correct)), "eval/correct": float(sum(correct)), "eval/total": float(len(correct)),
              # How often the answer is in a closed box at all: a pretrained model often answers unboxed.
              "eval/boxed_rate": float(np.mean([final_boxed(t)[0] is not None for t in texts])),
              "eval/reward": float(np.mean([r.score for r in items])),
              "eval/response_len": float(np.mean([len(r.completion.token_ids) for r in items])),
              "eval/truncated_frac": float(np.mean([not r.completion.finished for r in items]))}
    if auto_thinking:
        # In auto mode the policy chooses: how often does it think?
        result["eval/auto_think_share"] = auto_think_share(texts)
    tasks = [samples[r.group].task for r in items]
    if len(set(tasks)) > 1:
        for task in sorted(set(tasks)):
            result[f"eval/acc/{task}"] = float(np.mean([r.correct for r, t in zip(items, tasks) if t == task]))
            # The mean score too: for graded rewards (IoU, numeric closeness) it says more than a threshold.
            result[f"eval/reward/{task}"] = float(np.mean([r.score for r, t in zip(items, tasks) if t == task]))
        # Unweighted over tasks, so a small task counts as much as a large one.
        result["eval/acc_task_mean"] = float(np.mean([result[f"eval/acc/{task}"] for task in set(tasks)]))
    return result


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_correct(answers: list[str | None], correct: list[bool]) -> bool:
    """Whether the most frequent answer is a correct one; ties go to the answer seen first, and
    completions with no answer do not vote (all unanswered: wrong)."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == top)
    return next(ok for a, ok in zip(answers, correct) if a == winner)


def k_values(k: int) -> list[int]:
    """The k of pass@k to report from k samples: powers of two below k, and k."""
    return sorted({2 ** i for i in range(k.bit_length()) if 2 ** i < k} | {k})


def per_prompt(rollouts: Rollouts) -> list[dict]:
    """Per prompt: its completions' correctness, answers and scores, in prompt order."""
    rows = [{"correct": [], "answers": [], "scores": []} for _ in rollouts.samples]
    for item in rollouts.items:
        row = rows[item.group]
        row["correct"].append(item.correct)
        row["answers"].append(item.answer)
        row["scores"].append(item.score)
    return rows


def sampled_metrics(rows: list[dict], k: int) -> dict[str, float]:
    """avg@k, pass@j for the j of `k_values(k)`, and maj@k, averaged over prompts."""
    result = {f"avg@{k}": float(np.mean([np.mean(r["correct"]) for r in rows]))}
    for j in k_values(k):
        result[f"pass@{j}"] = float(np.mean([pass_at_k(len(r["correct"]), sum(r["correct"]), j) for r in rows]))
    result[f"maj@{k}"] = float(np.mean([majority_correct(r["answers"], r["correct"]) for r in rows]))
    return result


def per_task_lines(before: dict, after: dict) -> list[str]:
    """A held-out table, one row per task: accuracy and mean reward before -> after RL."""
    tasks = sorted(key.split("/", 2)[2] for key in after if key.startswith("eval/acc/"))
    if not tasks:
        return []
    width = max(len(task) for task in [*tasks, "mean of tasks"])
    lines = [f"{'task':<{width}}  accuracy before -> after   mean reward before -> after"]
    for task in tasks:
        acc, reward = f"eval/acc/{task}", f"eval/reward/{task}"
        lines.append(
            f"{task:<{width}}  {100 * before.get(acc, float('nan')):5.1f}% -> {100 * after[acc]:5.1f}%"
            f"        {before.get(reward, float('nan')):.3f} -> {after[reward]:.3f}"
        )
    mean = "eval/acc_task_mean"
    lines.append(f"{'mean of tasks':<{width}}  {100 * before.get(mean, float('nan')):5.1f}% -> {100 * after[mean]:5.1f}%")
    return lines


def band_check(acc: float, band: list[float] | None) -> tuple[bool | None, str]:
    """Whether held-out accuracy `acc` lies in `trainer.expected_acc` ([low, high], measured for the
    recipe with its seed), and the line that says so; (None, "") without a band."""
    if not band:
        return None, ""
    low, high = band
    inside = low <= acc <= high
    verdict = "inside" if inside else ("OUTSIDE: learning differs from the measured runs (a regression, or "
                                       "settings other than the recipe's)")
    return inside, f"expected {100 * low:.0f}-{100 * high:.0f}% for this recipe and seed: {verdict}"
