"""Chunked LM head (actor.logits_chunk_size) and token-budget micro-batches (actor.max_tokens_per_micro_batch):
both must leave log-probs, entropy, gradients and the update as the plain path computes them."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.algorithms import chunked_logprobs_entropy, entropy_from_logits, logprobs_from_logits
from trainer.batch import TrainBatch, plan_micro_batches, token_budget_groups
from trainer.config import ActorConfig, AlgorithmConfig, TinyModelConfig, TinyVisionConfig
from trainer.modeling import load_causal_lm, response_logprobs
from trainer.vision import Media
from trainer.workers.actor import ActorWorker
from trainer.workers.reference import ReferenceWorker

# Uneven lengths (prompt + response from 3 to 13 tokens), one empty response.
PROMPTS = [[2, 3, 11, 4], [5, 11, 6], [2, 3, 11, 4], [5, 11, 6], [7, 8, 9, 11, 4, 4], [3, 11]]
RESPONSES = [[15, 7, 8, 20, 14], [15, 9, 14], [15, 1, 20, 14], [15, 2, 2, 2, 2, 2, 2, 14], [15, 14], []]


# --- the chunked maths (token_ops) ---


def test_chunked_stats_by_hand():
    """head = identity, so each hidden row is its logits: [0, ln 3] is p = (1/4, 3/4); four equal logits are uniform."""
    calls = []

    def head(h):
        calls.append(h.shape[0])
        return h

    hidden = torch.tensor([[0.0, math.log(3)], [1.0, 1.0], [0.0, 2 * math.log(3)]])
    hidden = torch.cat([hidden, torch.full((3, 2), -1e4)], dim=1)  # two more vocab entries with ~0 probability
    labels = torch.tensor([1, 0, 0])
    logp, entropy = chunked_logprobs_entropy(hidden, head, labels, chunk_size=2, with_entropy=True)
    two_point = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert logp.tolist() == pytest.approx([math.log(0.75), math.log(0.5), math.log(0.1)], abs=1e-6)
    assert entropy.tolist() == pytest.approx([two_point, math.log(2), -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))],
                                             abs=1e-6)
    assert calls == [2, 1]  # never more rows than chunk_size
    # min_chunks pads with calls on zero rows (ZeRO-3 ranks must call the head equally often); same values.
    calls.clear()
    padded, _ = chunked_logprobs_entropy(hidden, head, labels, chunk_size=2, with_entropy=True, min_chunks=4)
    assert calls == [2, 1, 0, 0] and torch.equal(padded, logp)
    # Temperature 2 halves the logits: [0, 2 ln 3] -> [0, ln 3], the first row's distribution.
    logp_t, _ = chunked_logprobs_entropy(hidden[2:], head, torch.tensor([1]), chunk_size=4, temperature=2.0)
    assert logp_t.item() == pytest.approx(math.log(0.75), abs=1e-6)


def test_chunked_stats_equal_the_full_tensor_helpers():
    torch.manual_seed(0)
    weight = torch.randn(37, 8)
    hidden, labels = torch.randn(11, 8), torch.randint(37, (11,))
    logits = (hidden @ weight.T / 0.7).unsqueeze(0)
    for chunk in (1, 4, 11, 64):
        logp, entropy = chunked_logprobs_entropy(hidden, lambda h: h @ weight.T, labels, chunk_size=chunk,
                                                 temperature=0.7, with_entropy=True)
        assert torch.allclose(logp, logprobs_from_logits(logits, labels.unsqueeze(0))[0], atol=1e-6)
        assert torch.allclose(entropy, entropy_from_logits(logits)[0], atol=1e-6)


def test_backward_keeps_no_vocabulary_sized_tensor():
    """Under autograd each chunk is checkpointed: the graph saves chunk inputs [n, H], never logits [n, V]."""
    torch.manual_seed(0)
    vocab = 50
    weight = torch.randn(vocab, 3, requires_grad=True)
    hidden = torch.randn(6, 3, requires_grad=True)
    labels = torch.randint(vocab, (6,))

    def saved_shapes(fn):
        shapes = []

        def pack(t):
            shapes.append(tuple(t.shape))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn()
        return shapes, out

    shapes, (logp, entropy) = saved_shapes(lambda: chunked_logprobs_entropy(
        hidden, lambda h: h @ weight.T, labels, chunk_size=2, with_entropy=True))
    assert shapes and all(s[-1] != vocab for s in shapes), shapes
    (logp.sum() + entropy.sum()).backward()
    chunked_grads = weight.grad.clone(), hidden.grad.clone()
    # The same loss on full logits saves [.., V] tensors (what the test above rules out) and gives the same gradients.
    weight.grad = hidden.grad = None
    shapes, logits = saved_shapes(lambda: (hidden @ weight.T).unsqueeze(0))
    full = logprobs_from_logits(logits, labels.unsqueeze(0)).sum() + entropy_from_logits(logits).sum()
    full.backward()
    assert any(s[-1] == vocab for s in shapes)
    assert torch.allclose(chunked_grads[0], weight.grad, atol=1e-6)
    assert torch.allclose(chunked_grads[1], hidden.grad, atol=1e-6)


# --- response_logprobs on real models: chunked == plain ---


def stats_and_grads(model, batch, temperature, chunk_size):
    model.zero_grad(set_to_none=True)
    logp, entropy = response_logprobs(model, batch, temperature, with_entropy=True, chunk_size=chunk_size)
    # Any loss on both outputs; the mask weights only real tokens, as the policy loss does.
    weights = torch.linspace(-1.0, 1.0, logp.numel()).reshape(logp.shape)
    (((logp * weights + 0.3 * entropy) * batch.response_mask).sum()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), entropy.detach(), grads


def assert_chunked_equals_plain(model, batch, temperature, chunk_size):
    logp0, entropy0, grads0 = stats_and_grads(model, batch, temperature, 0)
    logp, entropy, grads = stats_and_grads(model, batch, temperature, chunk_size)
    assert torch.allclose(logp, logp0, atol=1e-5) and torch.allclose(entropy, entropy0, atol=1e-5)
    assert grads.keys() == grads0.keys() and len(grads) > 0
    for name, grad in grads.items():
        assert torch.allclose(grad, grads0[name], atol=1e-5), name
    # Past each row's response (all of an empty one) both paths give 0.
    past = torch.arange(logp.shape[1]).unsqueeze(0) >= batch.response_lens.unsqueeze(1)
    assert past.any() and (logp[past] == 0).all() and (logp[~past] < 0).all()
    return logp


@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_tiny_qwen2_chunked_equals_plain(tiny_model_dir, chunk_size, temperature):
    model = load_causal_lm(tiny_model_dir)
    head = model.get_output_embeddings()
    assert head.weight is model.get_input_embeddings().weight  # the tiny model ties its embeddings
    batch = TrainBatch.from_sequences(PROMPTS, RESPONSES, pad_id=14)
    assert_chunked_equals_plain(model, batch, temperature, chunk_size)
    # The head swapped in for the call is gone and the tie is intact.
    assert model.get_output_embeddings() is head and head.weight is model.get_input_embeddings().weight


def test_untied_head_chunked_equals_plain():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False))
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    batch = TrainBatch.from_sequences(PROMPTS, RESPONSES, pad_id=14)
    assert_chunked_equals_plain(model, batch, 1.0, 4)


@pytest.fixture(scope="module")
def tiny_vl_dir(tmp_path_factory):
    from trainer.tiny_model import build_tiny_vl_model

    vision = TinyVisionConfig()
    return str(build_tiny_vl_model(TinyModelConfig(), vision, tmp_path_factory.mktemp("tiny_vl") / "model", seed=0,
                                   image_pixels=vision.image_pixels))


def vl_batch(model, seed: int) -> TrainBatch:
    """Two rows, each one 112 x 112 image (8 x 8 patches of 14 -> 16 image tokens), of different lengths."""
    config = model.config
    g = torch.Generator().manual_seed(seed)
    image = [config.vision_start_token_id] + [config.image_token_id] * 16 + [config.vision_end_token_id]
    prompts = [[5, 6] + image + [7, 8, 9], [10] + image + [11]]
    responses = [[20, 21, 22, 23], [24, 25]]
    media = [Media(pixel_values=torch.randn(64, 1176, generator=g), image_grid_thw=torch.tensor([[1, 8, 8]]),
                   image_tokens=16, source=f"row{i}") for i in range(2)]
    return TrainBatch.from_sequences(prompts, responses, pad_id=0, media=media)


def test_tiny_qwen2_vl_chunked_equals_plain_and_sees_the_images(tiny_vl_dir):
    model = load_causal_lm(tiny_vl_dir)
    batch = vl_batch(model, seed=0)
    logp = assert_chunked_equals_plain(model, batch, 1.0, 3)
    # Other pixels, other log-probs: the images reach the model through the chunked path.
    with torch.no_grad():
        other, _ = response_logprobs(model, vl_batch(model, seed=1), 1.0, chunk_size=3)
    assert (other - logp).abs().max() > 1e-4


def test_chunked_forward_saves_no_vocabulary_sized_tensor(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir)
    vocab = model.config.vocab_size
    batch = TrainBatch.from_sequences(PROMPTS, RESPONSES, pad_id=14)
    for chunk_size, expect_vocab_sized in ((4, False), (0, True)):
        shapes = []

        def pack(t):
            shapes.append(tuple(t.shape))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            response_logprobs(model, batch, 1.0, with_entropy=True, chunk_size=chunk_size)
        assert any(s and s[-1] == vocab for s in shapes) == expect_vocab_sized, (chunk_size, shapes)


# --- token-budget micro-batches ---


def test_token_budget_groups_by_hand():
    lengths = [10, 3, 7, 3, 12]
    # Longest first: 12 alone (12 + 10 would pad to 24 > 20); 10 and 7 pad to 2 x 10 = 20; the two 3s.
    assert token_budget_groups(list(range(5)), lengths, 20) == [[4], [0, 2], [1, 3]]
    # A row over the budget is its own micro-batch.
    assert token_budget_groups([0, 1], [25, 5], 20) == [[0], [1]]
    assert token_budget_groups([0, 1, 2], [4, 4, 4], 12) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="max_tokens_per_micro_batch=0"):
        token_budget_groups([0], [3], 0)


def test_every_rank_runs_the_same_number_of_micro_batches():
    lengths = [10, 3, 7, 3, 12]
    # Two ranks: rank 0 holds rows 0-2, rank 1 rows 3-4.
    fixed = plan_micro_batches(lengths, micro_batch_size=2, world_size=2)
    assert fixed == [[[0, 1], [2]], [[3, 4], []]]
    budget = plan_micro_batches(lengths, micro_batch_size=2, max_tokens=14, world_size=2)
    # Rank 0: 10 alone (10 + 7 pads to 20), then 7 with 3 (2 x 7 = 14); rank 1: 12 alone, then 3 alone.
    assert budget == [[[0], [2, 1]], [[4], [3]]]
    uneven = plan_micro_batches(lengths, micro_batch_size=2, max_tokens=10, world_size=2)
    assert [len(plan) for plan in uneven] == [3, 3] and uneven[1][-1] == []
    for plan in (fixed, budget, uneven):
        assert sorted(row for rank in plan for micro in rank for row in micro) == list(range(5))
    assert plan_micro_batches(lengths, micro_batch_size=2, max_tokens=1000) == [[[4, 0, 2, 1, 3]]]


def make_actor(model_dir, *, loss_agg="token_mean", **actor_overrides):
    actor = ActorWorker(
        model_dir, actor=ActorConfig(mini_batch_size=6, threads=1, grad_clip=0.0, **actor_overrides),
        algorithm=AlgorithmConfig(loss_agg=loss_agg, kl_coef=0.1, kl_estimator="k3"),
        dtype="float32", seed=0, max_len=12,
    )
    # Adam's first step is about lr * sign(grad): float noise in a near-zero gradient would flip a whole
    # step. With SGD at lr 1 the weight change is the gradient, so weights compare to float precision.
    actor.strategy.optimizer = torch.optim.SGD([p for p in actor.model.parameters() if p.requires_grad], lr=1.0)
    actor.strategy.scheduler = torch.optim.lr_scheduler.LambdaLR(actor.strategy.optimizer, lambda _: 1.0)
    return actor


def rl_batch(actor) -> TrainBatch:
    batch = TrainBatch.from_sequences(PROMPTS, RESPONSES, pad_id=14)
    batch.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.3, -0.2])
    batch.old_logprobs = actor.log_probs(batch, 1.0)
    batch.ref_logprobs = batch.old_logprobs + 0.1
    return batch


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_token_budget_update_equals_fixed_micro_batches(tiny_model_dir, loss_agg):
    lengths = TrainBatch.from_sequences(PROMPTS, RESPONSES, pad_id=14).sequence_lengths()
    assert lengths == [9, 6, 8, 11, 8, 2]
    # Budget 24, longest first: 11 + 9 (2 x 11 = 22), then 8 + 8 + 6 (3 x 8 = 24), then 2 alone (4 x 8 = 32
    # would not fit): unlike any fixed-size split of the rows in order.
    assert plan_micro_batches(lengths, micro_batch_size=6, max_tokens=24) == [[[3, 0], [2, 4, 1], [5]]]
    runs = {}
    for name, overrides in {"whole": dict(micro_batch_size=6), "fixed2": dict(micro_batch_size=2),
                            "budget": dict(micro_batch_size=1, max_tokens_per_micro_batch=24)}.items():
        actor = make_actor(tiny_model_dir, loss_agg=loss_agg, **overrides)
        before = actor.weights()
        metrics = actor.update(rl_batch(actor), 1.0)
        runs[name] = (before, actor.weights(), metrics)
    before, want, want_metrics = runs["whole"]
    assert max(float((want[k] - before[k]).abs().max()) for k in want) > 0.05  # the step moved the weights
    for name in ("fixed2", "budget"):
        _, got, metrics = runs[name]
        for key, value in want.items():
            assert torch.allclose(got[key], value, atol=1e-6), f"{name}: {key}"
        for key in ("policy_loss", "grad_norm", "entropy", "kl"):
            assert metrics[key] == pytest.approx(want_metrics[key], rel=1e-5, abs=1e-7), f"{name}: {key}"


def test_chunked_update_equals_plain_update(tiny_model_dir):
    results = []
    for chunk_size in (0, 2):
        actor = make_actor(tiny_model_dir, micro_batch_size=3, logits_chunk_size=chunk_size)
        metrics = actor.update(rl_batch(actor), 1.0)
        results.append((actor.weights(), metrics))
    (want, want_metrics), (got, metrics) = results
    for key, value in want.items():
        assert torch.allclose(got[key], value, atol=1e-6), key
    assert metrics["entropy"] == pytest.approx(want_metrics["entropy"], rel=1e-6)


def test_log_probs_under_a_token_budget_keep_the_row_order(tiny_model_dir):
    batch = TrainBatch.from_sequences(PROMPTS, RESPONSES, pad_id=14)
    plain = make_actor(tiny_model_dir, micro_batch_size=6, logits_chunk_size=0).log_probs(batch, 0.8)
    budget = make_actor(tiny_model_dir, max_tokens_per_micro_batch=16, logits_chunk_size=3).log_probs(batch, 0.8)
    assert plain.shape == budget.shape == batch.response_mask.shape
    assert torch.allclose(budget, plain, atol=1e-5)
    reference = ReferenceWorker(tiny_model_dir, dtype="float32", micro_batch_size=2, threads=1,
                                max_tokens_per_micro_batch=16, logits_chunk_size=3)
    assert torch.allclose(reference.log_probs(batch, 0.8), plain, atol=1e-5)
    # Row 3 (the longest, first in the plan) on its own: rows come back in the batch's order, not the plan's.
    alone = make_actor(tiny_model_dir, micro_batch_size=1).log_probs(batch.select([3]), 0.8)
    assert torch.allclose(budget[3, : alone.shape[1]], alone[0], atol=1e-5)


# --- sharded strategies (2 Ray actor processes, gloo) ---


@pytest.mark.slow
@pytest.mark.parametrize("strategy,extra", [("fsdp2", {"reshard_after_forward": True}), ("deepspeed", {"zero_stage": 3})])
def test_sharded_chunked_budget_update_equals_plain(tiny_model_dir, strategy, extra):
    """FSDP2 and ZeRO-3 hold the LM head's weight sharded outside their forward hooks; the chunked head runs
    inside the model's forward, so with a token budget (uneven micro-batch counts per rank, padded) the
    update equals the plain single-worker one."""
    from trainer.config import RoleResources
    from trainer.workers.group import WorkerGroup, init_ray

    def configs(**actor_overrides):
        actor = ActorConfig(lr=5e-3, mini_batch_size=6, threads=1, **actor_overrides)
        algorithm = AlgorithmConfig(loss_agg="token_mean", kl_coef=0.1, kl_estimator="k3")
        return dict(actor=actor, algorithm=algorithm, dtype="float32", seed=0, max_len=12)

    lengths = TrainBatch.from_sequences(PROMPTS, RESPONSES, pad_id=14).sequence_lengths()
    # Rank 0 (lengths 9, 6, 8) fits in 27 tokens at once; rank 1 (11, 8, 2) needs two, so rank 0 adds a
    # zero-weight micro-batch.
    plan = plan_micro_batches(lengths, micro_batch_size=1, max_tokens=27, world_size=2)
    assert plan == [[[0, 2, 1], []], [[3, 4], [5]]]
    plain = ActorWorker(tiny_model_dir, **configs(micro_batch_size=6, logits_chunk_size=0))
    batch = rl_batch(plain)
    want = plain.update(batch, 1.0)
    init_ray(None, None, 2)
    group = WorkerGroup("actor", ActorWorker, RoleResources(count=2, num_cpus=0.5), use_ray=True, ranked=True,
                        model_path=tiny_model_dir, **configs(strategy=strategy, max_tokens_per_micro_batch=27,
                                                             logits_chunk_size=2, **extra))
    try:
        host, port = group.call_one(0, "rendezvous_address")
        group.call("init_distributed", host, port)
        old = group.call("log_probs", batch, 1.0)[0]
        assert torch.allclose(old, batch.old_logprobs, atol=1e-5)
        got = group.call("update", batch, 1.0)[0]
        weights = group.call("weights")[0]
    finally:
        group.shutdown()
    for key in ("policy_loss", "grad_norm", "kl", "entropy"):
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key
    # Adam moves each weight by about lr = 5e-3; float-order noise in near-zero gradients stays far below.
    for key, value in plain.weights().items():
        diff = (weights[key] - value).abs()
        assert float(diff.max()) < 1e-3 and float(diff.mean()) < 1e-5, key
