"""The HF engine's one left-padded generate call: the same tokens and log-probs as unpadded rows."""

from __future__ import annotations

import torch

from trainer.rollout.hf_engine import HFEngine
from trainer.rollout.sampling import SamplingSpec

PROMPTS = [[5, 9, 12], [7, 3, 3, 8, 20, 4, 11], [6, 6], [3, 2, 17, 9]]


def test_padded_greedy_equals_each_prompt_alone(tiny_model_dir):
    engine = HFEngine(tiny_model_dir)
    spec = SamplingSpec(n=1, temperature=0.0, max_new_tokens=10)
    together = engine.generate(PROMPTS, spec)
    for prompt, completion in zip(PROMPTS, together):
        alone = engine.generate([prompt], spec)[0]
        assert completion.token_ids == alone.token_ids
        assert max(abs(a - b) for a, b in zip(completion.logprobs, alone.logprobs)) < 1e-5


def test_padded_logprobs_equal_an_unpadded_forward(tiny_model_dir):
    engine = HFEngine(tiny_model_dir)
    spec = SamplingSpec(n=3, temperature=0.7, max_new_tokens=12, stop_token_ids=(14,), seed=4)
    completions = engine.generate(PROMPTS, spec, indices=[10, 11, 12, 13])
    assert [c.prompt_index for c in completions] == [i for i in (10, 11, 12, 13) for _ in range(3)]
    assert engine.generate(PROMPTS, spec, indices=[10, 11, 12, 13]) == completions  # seeded: a rerun repeats
    for c in completions:
        prompt = PROMPTS[c.prompt_index - 10]
        ids = torch.tensor([prompt + c.token_ids])
        with torch.no_grad():
            logits = engine.model(input_ids=ids).logits[0, len(prompt) - 1 : -1] / 0.7
        expected = torch.log_softmax(logits.float(), -1).gather(-1, ids[0, len(prompt):, None])[:, 0]
        assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-5)
        assert c.finished == (c.token_ids[-1] == 14)
        assert 14 not in c.token_ids[:-1]


def test_auto_engine_counts_the_folder_parameters(tiny_model_dir, tmp_path, monkeypatch):
    import trainer.rollout as rollout
    from trainer.modeling import load_causal_lm

    count = rollout.parameter_count(tiny_model_dir)
    assert count == sum(p.numel() for p in load_causal_lm(tiny_model_dir).parameters())
    assert rollout.choose_engine("auto", tiny_model_dir, gpus=False) == "hf"
    assert rollout.choose_engine("auto", tiny_model_dir, gpus=True) == "vllm"
    assert rollout.choose_engine("auto", tiny_model_dir, gpus=False, tensor_parallel_size=2) == "vllm"
    assert rollout.choose_engine("vllm", tiny_model_dir, gpus=False) == "vllm"
    assert rollout.choose_engine("auto", str(tmp_path), gpus=False) == "vllm"  # nothing to count
    monkeypatch.setattr(rollout, "HF_ENGINE_BELOW_PARAMS", count)
    assert rollout.choose_engine("auto", tiny_model_dir, gpus=False) == "vllm"


def test_top_k_one_samples_the_greedy_tokens_and_hitting_the_limit_is_unfinished(tiny_model_dir):
    engine = HFEngine(tiny_model_dir)
    greedy = engine.generate(PROMPTS, SamplingSpec(n=1, temperature=0.0, max_new_tokens=6))
    top1 = engine.generate(PROMPTS, SamplingSpec(n=2, temperature=0.7, top_k=1, max_new_tokens=6, seed=9))
    assert [c.token_ids for c in top1] == [c.token_ids for c in greedy for _ in range(2)]
    for c in top1:  # no stop token given: every row runs to the limit
        assert len(c.token_ids) == 6 and not c.finished
        # Log-probs are of logits / temperature over the whole vocabulary, not of the top-k filtered one (0).
        assert all(lp < 0 for lp in c.logprobs)


def test_an_empty_share_of_prompts_gives_no_completions(tiny_model_dir):
    assert HFEngine(tiny_model_dir).generate([], SamplingSpec(n=4)) == []
