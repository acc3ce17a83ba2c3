"""The prompt-once forward (actor.share_prompt_forward): each distinct prompt runs once and its rows continue
from its cached keys and values. Log-probs, entropy and gradients must equal the full-row forward's."""

import pytest
import torch

from trainer.batch import TrainBatch
from trainer.modeling import load_causal_lm, response_logprobs, shares_prompts, use_prompt_cache

# Three prompts of different lengths, each answered several times, plus one prompt seen once.
PROMPTS = [[2, 3, 11, 4, 9]] * 3 + [[5, 11, 6]] * 4 + [[7, 8, 9, 10, 12, 13, 3]] * 2 + [[4, 4, 6, 2]]
RESPONSES = [[15, 7, 8], [15, 9, 14, 3, 3], [1], [15, 2, 2, 2, 14, 5], [15, 1], [6, 6, 6], [3, 4, 5, 6],
             [9, 9], [15, 7, 8, 20, 14, 2, 2], [8, 1, 2]]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_causal_lm(tiny_model_dir).train()


def run(model, batch, chunk_size, share):
    model.zero_grad()
    logp, entropy = response_logprobs(model, batch, 0.7, with_entropy=True, chunk_size=chunk_size,
                                      share_prompts=share)
    weights = torch.linspace(-1, 1, logp.numel()).view_as(logp)  # every token's gradient counts differently
    ((logp + 0.1 * entropy) * weights).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return logp.detach(), entropy.detach(), grads


@pytest.mark.parametrize("chunk_size", [0, 4])
def test_prompt_once_forward_equals_full_rows(model, chunk_size):
    batch = TrainBatch.from_sequences(PROMPTS, RESPONSES, pad_id=0)
    full, shared = run(model, batch, chunk_size, False), run(model, batch, chunk_size, True)
    assert full[0].abs().max() > 0.5, "log-probs too small to compare"
    torch.testing.assert_close(shared[0], full[0], atol=2e-6, rtol=0)
    torch.testing.assert_close(shared[1], full[1], atol=2e-6, rtol=0)
    assert (shared[2] - full[2]).norm() / full[2].norm() < 1e-5
    # Zero past each row's response, as on the full path.
    assert shared[0][2, 1:].abs().sum() == 0 and shared[0][8].abs().sum() > 0


def test_each_prompt_runs_once(model):
    """The embedding sees each distinct prompt once (all but its last token, padded to the longest), then
    every row's last prompt token and its response (padded to the longest response)."""
    batch = TrainBatch.from_sequences(PROMPTS, RESPONSES, pad_id=0)
    seen = []
    handle = model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].numel()))
    try:
        with torch.no_grad():
            response_logprobs(model, batch, 1.0, chunk_size=4, share_prompts=True)
            response_logprobs(model, batch, 1.0, chunk_size=4, share_prompts=False)
    finally:
        handle.remove()
    distinct, longest_prompt, rows, longest_response = 4, 7, 10, 7
    assert seen == [distinct * (longest_prompt - 1), rows * (longest_response + 1), rows * (7 + 7)]


def test_when_the_prompt_cache_applies():
    repeated = TrainBatch.from_sequences(PROMPTS, RESPONSES, pad_id=0)
    distinct = TrainBatch.from_sequences([[2, 3], [2, 4]], [[5], [6]], pad_id=0)
    one_token = TrainBatch.from_sequences([[2], [2]], [[5], [6]], pad_id=0)
    assert shares_prompts(repeated) and not shares_prompts(distinct) and not shares_prompts(one_token)
    assert use_prompt_cache(None, repeated, "cpu") and not use_prompt_cache(None, repeated, "cuda")
    assert use_prompt_cache(True, repeated, "cuda") and not use_prompt_cache(False, repeated, "cpu")
    assert not use_prompt_cache(True, distinct, "cpu")
