"""Hand-computed checks for R-4B's bi-mode policy optimisation helpers."""

import pytest
import torch

from trainer.algorithms import auto_think_share, get_advantage, mode_metrics


def close(a, b, tol=1e-5):
    f32 = torch.float32
    torch.testing.assert_close(torch.as_tensor(a, dtype=f32), torch.as_tensor(b, dtype=f32), atol=tol, rtol=tol)


def test_merged_group_advantage_hand_example():
    # 1 prompt, g=2: thinking [1, 0], non-thinking [1, 1] -> merged [1, 0, 1, 1]
    # mean 0.75; deviations 0.25, -0.75, 0.25, 0.25; squares sum 3*0.0625 + 0.5625 = 0.75
    # unbiased var 0.75 / 3 = 0.25, std 0.5 -> [0.5, -1.5, 0.5, 0.5]
    # (the step's layout: one group per prompt, whatever the mode; tests/test_loop_features.py checks it)
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    merged = torch.zeros(4, dtype=torch.long)
    adv = get_advantage("grpo")(rewards, merged, None, eps=0.0)
    close(adv, [0.5, -1.5, 0.5, 0.5])
    # per-mode groups instead: [1, 0] -> +-0.5/0.707107 = +-0.707107; [1, 1] -> 0, 0
    # (default eps: with eps=0 a constant group is 0/0)
    separate = get_advantage("grpo")(rewards, torch.tensor([0, 0, 1, 1]), None)
    close(separate, [0.707107, -0.707107, 0.0, 0.0])
    assert not torch.allclose(adv, separate)
    # the always-right non-thinking mode gets credit only when merged (0.5 vs 0)
    # mean-centring only: [1, 0, 1, 1] - 0.75
    close(get_advantage("grpo")(rewards, merged, None, norm_by_std=False), [0.25, -0.75, 0.25, 0.25])


def test_mode_metrics():
    # thinking: rewards [1, 0] -> 0.5, lengths [100, 300] -> 200
    # non_thinking: rewards [1, 1] -> 1.0, lengths [10, 20] -> 15
    modes = ["thinking", "thinking", "non_thinking", "non_thinking"]
    out = mode_metrics(torch.tensor([1.0, 0.0, 1.0, 1.0]), [100, 300, 10, 20], modes)
    assert out == {
        "bpo/non_thinking/length_mean": 15.0,
        "bpo/non_thinking/reward_mean": 1.0,
        "bpo/thinking/length_mean": 200.0,
        "bpo/thinking/reward_mean": 0.5,
    }
    with pytest.raises(ValueError):
        mode_metrics([1.0], [1, 2], ["thinking"])


def test_auto_think_share():
    responses = [
        "<think>\nstep one</think>A",  # thinks
        "<think>\n\n</think>B",  # empty block: no
        "plain answer",  # no block: no
        "<think> cut off at the length limit",  # unclosed but non-empty: thinks
        "reasoning whose <think> was in the prompt</think>C",  # thinks
        "<think> \t </think>D",  # whitespace only: no
    ]
    assert auto_think_share(responses) == 0.5  # 3 of 6
    assert auto_think_share([]) == 0.0
