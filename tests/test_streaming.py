"""Completions handed out as they finish, and rewards rated while the engines decode the rest: the vLLM
engine's `generate_stream`, and the collector's rating of each part (trainer/collect.py)."""

from __future__ import annotations

import threading
import time
import pytest

from trainer.loop import Trainer
from trainer.recipe_config import compose_config

pytestmark = pytest.mark.slow

PROMPTS = [[3 + i, 9, 4 + 2 * i] for i in range(12)]


def _vllm_parts(model_path):
    """In a process of its own: an engine that runs four sequences at a time streams 12 greedy prompts
    (asked for in parts of at least three); then the same prompts reversed, two completions a prompt, a
    stream closed after its first part, and a rerun."""
    from trainer.rollout.sampling import SamplingSpec
    from trainer.rollout.vllm_engine import VLLMEngine

    engine = VLLMEngine(model_path, max_model_len=64, max_num_seqs=4)
    spec = SamplingSpec(n=1, temperature=0.0, max_new_tokens=6)
    indices = [100 + i for i in range(len(PROMPTS))]
    parts = [[(c.prompt_index, c.token_ids) for c in part]
             for part in engine.generate_stream(PROMPTS, spec, indices, parts=4)]
    forward = engine.generate(PROMPTS, spec, indices)
    backward = engine.generate(PROMPTS[::-1], spec, indices[::-1])
    sampled = SamplingSpec(n=2, temperature=1.0, max_new_tokens=6)
    pairs = [(c.prompt_index, c.sample) for c in engine.generate(PROMPTS[:3], sampled, indices[:3])]
    stream = engine.generate_stream(PROMPTS, sampled, indices, parts=4)
    first = [(c.prompt_index, c.sample) for c in next(stream)]
    stream.close()
    left = engine.llm.llm_engine.has_unfinished_requests()
    again = engine.generate(PROMPTS, spec, indices)
    return parts, forward, backward, pairs, first, left, again


def test_vllm_engine_hands_out_completions_in_the_order_they_finish(tiny_model_dir):
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        parts, forward, backward, pairs, first, left, again = pool.apply(_vllm_parts, (tiny_model_dir,))

    # Four sequences at a time, first come first served: prompts finish in waves of four.
    assert [[index for index, _ in part] for part in parts] == [[100, 101, 102, 103], [104, 105, 106, 107],
                                                               [108, 109, 110, 111]]
    # Each completion stays with its prompt, whatever the order: greedy tokens depend on the prompt alone.
    by_index = {c.prompt_index: c.token_ids for c in forward}
    assert [c.prompt_index for c in forward] == list(range(100, 112))
    assert [c.prompt_index for c in backward] == list(range(111, 99, -1))
    assert {c.prompt_index: c.token_ids for c in backward} == by_index
    assert {index: tokens for part in parts for index, tokens in part} == by_index
    assert len(set(map(tuple, by_index.values()))) > 1  # distinct prompts, distinct answers: the check can fail
    # n = 2: one request per completion, numbered and put back in order.
    assert pairs == [(100, 0), (100, 1), (101, 0), (101, 1), (102, 0), (102, 1)]
    # A stream closed early leaves nothing in the engine: the next call answers as the first did.
    assert len(first) >= 6 and len(set(first)) == len(first)
    assert left is False
    assert [(c.prompt_index, c.token_ids) for c in again] == [(c.prompt_index, c.token_ids) for c in forward]


def _collect_with_events(tmp_path, *overrides, kill_after_first_part=False):
    """One step's collection on the tiny model through Ray and vLLM, recording each part the engines hand
    out and each rating call. The stream waits (up to 5 s) until a part is rated before taking the next,
    so the order of the two is the collector's, not the machine's load."""
    import ray

    cfg = compose_config([
        f"trainer.output_dir={tmp_path}", "engine.ray=true", "rollout.engine=vllm", "sft.steps=0",
        "data.num_train=32", "data.num_eval=4", "data.prompts_per_step=8", "rollout.n=2",
        "actor.mini_batch_size=16", "actor.micro_batch_size=16",
        "reward.num_workers=0", "tracking.wandb.mode=disabled", "tracking.console=false",
        "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.1}]}", *overrides,
    ])
    trainer = Trainer(cfg)
    try:
        trainer.start_workers(trainer.base_model_path)
        workers, scorer = trainer.workers, trainer.collector.scorer
        events, rated = [], threading.Semaphore(0)

        def stream(*args, **kwargs):
            for part in type(workers).generate_stream(workers, *args, **kwargs):
                events.append(("part", time.monotonic(), [(c.prompt_index, c.sample) for c in part]))
                yield part
                rated.acquire(timeout=5)
                if kill_after_first_part and len(events) == 2:
                    ray.kill(workers.rollout.workers[0])

        def rate(texts, owners):
            events.append(("rate", time.monotonic(), len(texts)))
            rated.release()
            return type(scorer).rate(scorer, texts, owners)

        workers.generate_stream, scorer.rate = stream, rate
        rollouts, _ = trainer.collector.collect(0)
        restarts = workers.restarts
    finally:
        trainer.close()
    return events, rollouts, restarts


def test_rewards_are_rated_while_vllm_decodes(tmp_path):
    events, rollouts, _ = _collect_with_events(tmp_path, "rollout.max_new_tokens=6", "rollout.max_num_seqs=4")
    parts = [e for e in events if e[0] == "part"]
    rates = [e for e in events if e[0] == "rate"]
    assert len(parts) >= 2 and [n for _, _, n in rates] == [len(keys) for _, _, keys in parts]
    assert sorted(key for _, _, keys in parts for key in keys) == [(i, j) for i in range(8) for j in range(2)]
    # The first part was rated before the engine handed out the last one.
    assert rates[0][1] < parts[-1][1]
    # Items come back grouped by prompt, and each score is the one its own text earns.
    assert [r.group for r in rollouts.items] == [g for g in range(8) for _ in range(2)]
    assert len({len(r.text) for r in rollouts.items}) > 1  # texts differ: a misplaced score would show
    assert [r.score for r in rollouts.items] == pytest.approx([0.1 * len(r.text) for r in rollouts.items])


def test_an_engine_dying_mid_stream_loses_and_repeats_no_completion(tmp_path):
    events, rollouts, restarts = _collect_with_events(
        tmp_path, "rollout.max_new_tokens=24", "rollout.max_num_seqs=2", "trainer.max_worker_restarts=1",
        kill_after_first_part=True)
    parts = [keys for kind, _, keys in events if kind == "part"]
    assert restarts == 1 and len(parts) >= 2
    # What the first engine handed out is kept; its replacement adds only the rest, each completion once.
    delivered = [key for keys in parts for key in keys]
    assert sorted(delivered) == [(i, j) for i in range(8) for j in range(2)]
    assert not set(parts[0]) & {key for keys in parts[1:] for key in keys}
    assert [(r.group, r.completion.sample) for r in rollouts.items] == [(i, j) for i in range(8) for j in range(2)]
    assert [r.score for r in rollouts.items] == pytest.approx([0.1 * len(r.text) for r in rollouts.items])
