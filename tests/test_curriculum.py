"""TaskHomogeneousSampler: one task per batch, easy-first order, exact resume."""

import json

import pytest

from data.sampler import TaskHomogeneousSampler
from data.schema import Sample


def make(task, difficulties):
    return [
        Sample(prompt=f"{task}{i}", task=task, id=f"{task}{i}", metadata={"difficulty": d})
        for i, d in enumerate(difficulties)
    ]


def ids(batch):
    return [s.id for s in batch]


def test_curriculum_order_easy_first_with_stable_ties():
    # difficulties [3, 1, 2, 1, 5] -> sorted (stable): a1(1), a3(1), a2(2), a0(3), a4(5)
    # batch 2: [a1, a3], [a2, a0]; the tail a4 is skipped and epoch 1 replays the order
    s = TaskHomogeneousSampler({"a": make("a", [3, 1, 2, 1, 5])}, 2, seed=0, curriculum_key="difficulty")
    assert ids(s.next_batch()) == ["a1", "a3"]
    assert ids(s.next_batch()) == ["a2", "a0"]
    assert s.epoch("a") == 1 and s.step == 2
    assert ids(s.next_batch()) == ["a1", "a3"]


def test_each_task_keeps_its_own_position():
    # a: difficulties 0..5 -> order a0..a5 ; b: 0..3 -> b0..b3 ; batch 2
    s = TaskHomogeneousSampler(
        {"a": make("a", range(6)), "b": make("b", range(4))},
        2,
        seed=3,
        task_weights={"a": 1.0, "b": 0.0},
        curriculum_key="difficulty",
    )
    assert ids(s.next_batch()) == ["a0", "a1"] and s.last_task == "a"
    assert ids(s.next_batch()) == ["a2", "a3"]
    s.set_task_weights({"a": 0, "b": 1})
    assert ids(s.next_batch()) == ["b0", "b1"] and s.last_task == "b"  # b starts at its own 0
    s.set_task_weights({"a": 1, "b": 0})
    assert ids(s.next_batch()) == ["a4", "a5"]  # a continues where it stopped
    assert (s.epoch("a"), s.epoch("b")) == (1, 0)  # a used 6 of 6, b 2 of 4
    assert s.task_weights == {"a": 1.0, "b": 0.0}


def test_batches_are_task_homogeneous_and_shuffled_per_epoch():
    # no curriculum_key: a (6 samples, batch 3) has 2 batches per epoch, each epoch a permutation
    s = TaskHomogeneousSampler({"a": make("a", [0] * 6), "b": make("b", [0] * 5)}, 3, seed=11)
    per_task = {"a": [], "b": []}
    for _ in range(24):
        batch = s.next_batch()
        assert {x.task for x in batch} == {s.last_task}
        per_task[s.last_task].append(ids(batch))
    a = per_task["a"]
    assert len(a) >= 4  # 24 uniform draws; P(fewer than 4 a's) is ~2e-4, and the seed is fixed
    epoch0, epoch1 = a[0] + a[1], a[2] + a[3]
    assert sorted(epoch0) == sorted(epoch1) == [f"a{i}" for i in range(6)]  # 6 distinct per epoch
    assert epoch0 != epoch1  # fresh shuffle each epoch
    # b (5 samples, batch 3): one batch per epoch, its 2-sample tail skipped; never repeats inside
    assert all(len(set(b)) == 3 for b in per_task["b"])


def test_task_draw_depends_only_on_seed_and_step():
    # same names, weights and seed but different task sizes -> same task sequence
    s1 = TaskHomogeneousSampler({"a": make("a", [0] * 2), "b": make("b", [0] * 2)}, 2, seed=5)
    s2 = TaskHomogeneousSampler({"b": make("b", [0] * 9), "a": make("a", [0] * 7)}, 2, seed=5)
    seq1, seq2 = [], []
    for _ in range(30):
        s1.next_batch(), s2.next_batch()
        seq1.append(s1.last_task)
        seq2.append(s2.last_task)
    assert seq1 == seq2 and set(seq1) == {"a", "b"}


def test_task_weights_set_draw_frequency():
    # weights 3:1 -> P(a) = 0.75; 400 draws: expected 300, binomial std sqrt(400*0.75*0.25) = 8.66;
    # accept 300 +- 43 (5 std)
    s = TaskHomogeneousSampler(
        {"a": make("a", [0] * 2), "b": make("b", [0] * 2)}, 1, seed=1, task_weights={"a": 3, "b": 1}
    )
    n_a = 0
    for _ in range(400):
        s.next_batch()
        n_a += s.last_task == "a"
    assert 257 <= n_a <= 343


@pytest.mark.parametrize("curriculum_key", [None, "difficulty"])
def test_resume_is_exact_across_epoch_boundaries(curriculum_key):
    # a: 5 samples / batch 2 -> 2 batches per epoch; b: 7 -> 3 per epoch. 14 steps cross several epochs.
    data = {"a": make("a", [4, 2, 2, 0, 1]), "b": make("b", [6, 5, 4, 3, 2, 1, 0])}
    kw = dict(seed=7, curriculum_key=curriculum_key)
    ref = TaskHomogeneousSampler(data, 2, task_weights={"a": 2, "b": 1}, **kw)
    run = TaskHomogeneousSampler(data, 2, task_weights={"a": 2, "b": 1}, **kw)
    expected = []
    for step in range(14):
        if step == 4:
            ref.set_task_weights({"a": 1, "b": 1.5})
        expected.append((ids(ref.next_batch()), ref.last_task))
    for step in range(6):
        if step == 4:
            run.set_task_weights({"a": 1, "b": 1.5})
        run.next_batch()
    state = json.loads(json.dumps(run.state_dict()))  # JSON-serialisable
    assert state == run.state_dict()
    epochs_at_save = {t: run.epoch(t) for t in ("a", "b")}
    # a sampler built with another seed and default weights: the saved state wins
    resumed = TaskHomogeneousSampler(data, 2, seed=99, curriculum_key=curriculum_key)
    resumed.load_state_dict(state)
    assert resumed.task_weights == {"a": 1.0, "b": 1.5} and resumed.step == 6
    got = [(ids(resumed.next_batch()), resumed.last_task) for _ in range(8)]
    assert got == expected[6:]
    # the resumed part really crossed epoch boundaries of both tasks
    assert all(resumed.epoch(t) > epochs_at_save[t] for t in ("a", "b"))


def test_errors_name_the_task():
    with pytest.raises(ValueError, match="'small'.*2 samples.*batch_size 3"):
        TaskHomogeneousSampler({"big": make("big", [0] * 5), "small": make("small", [0] * 2)}, 3, seed=0)
    data = {"a": make("a", [0] * 3), "b": make("b", [0] * 3)}
    with pytest.raises(ValueError, match="unknown \\['c'\\]"):
        TaskHomogeneousSampler(data, 1, seed=0, task_weights={"a": 1, "b": 1, "c": 1})
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        TaskHomogeneousSampler(data, 1, seed=0, task_weights={"a": 1})
    with pytest.raises(ValueError, match="'b'"):
        TaskHomogeneousSampler(data, 1, seed=0, task_weights={"a": 1, "b": -1})
    with pytest.raises(ValueError, match="positive"):
        TaskHomogeneousSampler(data, 1, seed=0, task_weights={"a": 0, "b": 0})
    bad = {"a": make("a", [0, 1]) + [Sample(prompt="x", task="a", id="nokey")]}
    with pytest.raises(ValueError, match="task 'a': sample nokey"):
        TaskHomogeneousSampler(bad, 1, seed=0, curriculum_key="difficulty")
    with pytest.raises(ValueError):
        TaskHomogeneousSampler({}, 1, seed=0)


def test_load_state_dict_rejects_mismatched_state():
    data = {"a": make("a", [0] * 4), "b": make("b", [0] * 4)}
    s = TaskHomogeneousSampler(data, 2, seed=0)
    state = s.state_dict()
    other = TaskHomogeneousSampler({"a": make("a", [0] * 4)}, 2, seed=0)
    with pytest.raises(ValueError, match="tasks"):
        other.load_state_dict(state)
    # position 3 > 4 - 2: no full batch could start there
    bad = json.loads(json.dumps(state))
    bad["tasks"]["b"]["position"] = 3
    with pytest.raises(ValueError, match="task 'b' position 3"):
        s.load_state_dict(bad)
    with pytest.raises(ValueError, match="lacks"):
        s.load_state_dict({"seed": 0})


def test_staged_pool_admits_one_stage_every_stage_steps():
    from data.curriculum import staged_pool

    stages = [2, 0, 5, 0, 2]  # distinct stages 0, 2, 5
    assert staged_pool(stages, 0, 10) == [1, 3]
    assert staged_pool(stages, 9, 10) == [1, 3]
    assert staged_pool(stages, 10, 10) == [0, 1, 3, 4]
    assert staged_pool(stages, 20, 10) == [0, 1, 2, 3, 4]
    assert staged_pool(stages, 500, 10) == [0, 1, 2, 3, 4]
    assert staged_pool([7, 7], 0, 1) == [0, 1]


def test_sft_curriculum_key_must_be_an_integer_on_every_sample():
    from data.curriculum import curriculum_stages

    good = [Sample(prompt="p", id="a", metadata={"word_rank": 2}), Sample(prompt="q", id="b", metadata={"word_rank": 0})]
    assert curriculum_stages(good, "word_rank") == [2, 0]
    for bad in ({}, {"word_rank": 1.5}, {"word_rank": True}):
        with pytest.raises(ValueError, match=r"sft.curriculum_key='word_rank': sample 'c' has metadata"):
            curriculum_stages(good + [Sample(prompt="r", id="c", metadata=bad)], "word_rank")
