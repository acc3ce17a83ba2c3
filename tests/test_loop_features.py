"""Controller features on a few real steps (HF engine, in-process): BPO modes, dynamic sampling,
task-homogeneous batches, frozen parameters."""

import pytest
import torch

from trainer.recipe_config import compose_config
from trainer.loop import Trainer

pytestmark = pytest.mark.slow

BASE = [
    "engine.ray=false", "rollout.engine=hf", "sft.steps=0", "data.num_train=64", "data.num_eval=4",
    "data.prompts_per_step=4", "rollout.n=2", "rollout.max_new_tokens=8", "actor.mini_batch_size=8",
    "actor.micro_batch_size=8", "reward.num_workers=0", "tracking.wandb.mode=disabled", "tracking.console=false",
    "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.1}]}",
]


def make_trainer(tmp_path, *extra):
    trainer = Trainer(compose_config([f"trainer.output_dir={tmp_path}", *BASE, *extra]))
    trainer.start_workers(trainer.base_model_path)
    return trainer


def test_bpo_modes_share_one_group_per_prompt(tmp_path):
    trainer = make_trainer(
        tmp_path, "rollout.modes=[thinking,non_thinking]", "actor.mini_batch_size=16", "actor.micro_batch_size=16",
        "rollout.mode_prefixes={thinking: '<think>', non_thinking: '<think></think>'}",
        "tracking.samples_every=2", "tracking.samples_per_log=6",
    )
    try:
        rollouts = trainer.collector.round(trainer.sampler.next_batch(), seed=5)
        metrics = trainer.step(1)
        recorded = trainer.sample_rows
    finally:
        trainer.close()
    # 4 prompts x 2 modes x n=2: each prompt's group holds its 2 thinking and 2 non-thinking completions.
    items = rollouts.items
    assert len(items) == 16
    for g in range(4):
        modes = sorted(r.mode for r in items if r.group == g)
        assert modes == ["non_thinking", "non_thinking", "thinking", "thinking"]
    think_id, close_id = trainer.prompts.tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    for ids, text, mode in [(r.prompt_ids, r.text, r.mode) for r in items]:
        prefix = [think_id] if mode == "thinking" else [think_id, close_id]
        assert ids[-len(prefix):] == prefix, "the mode prefix is forced as part of the prompt"
        assert text.startswith("<think></think>" if mode == "non_thinking" else "<think>")
    assert metrics["batch/kept_completions"] == 16
    assert {"bpo/thinking/reward_mean", "bpo/non_thinking/reward_mean"} <= set(metrics)

    # Sample table: first completion of each of the 4 prompts, then the second of prompts 0 and 1.
    expected = [[i for i, r in enumerate(items) if r.group == group][rank] for rank, group in
                [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]]
    rows = rollouts.table_rows(6)
    assert [r["completion"] for r in rows] == [items[i].text for i in expected]
    assert [r["reward"] for r in rows] == [items[i].score for i in expected]
    assert [r["mode"] for r in rows] == [items[i].mode for i in expected]
    assert rows[0]["prompt"] == rollouts.samples[0].prompt and rows[0]["ground_truth"] == str(rollouts.samples[0].ground_truth)
    # step index 1 is the 2nd step: with samples_every=2 the trainer records 6 rows over 4 prompts.
    assert len(recorded) == 6 and len({r["prompt"] for r in recorded[:4]}) == 4


def test_dynamic_sampling_refills_with_varied_groups(tmp_path):
    trainer = make_trainer(
        tmp_path, "algorithm.dynamic_sampling=true", "algorithm.dynamic_sampling_max_rounds=6",
        "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len_if_even', weight: 0.1}]}",
    )
    try:
        rollouts, info = trainer.collector.collect(0)
    finally:
        trainer.close()
    # Groups of odd-leading prompts score all 0 and must be gone; the batch is refilled to 4 groups.
    assert len(rollouts.samples) == 4
    assert all(int(s.prompt[0]) % 2 == 0 for s in rollouts.samples)
    assert info["batch/sampling_rounds"] >= 2
    assert info["batch/dropped_groups"] == 4 * info["batch/sampling_rounds"] - 4
    assert rollouts.varied_groups() == [0, 1, 2, 3]


def test_task_homogeneous_batches(tmp_path):
    trainer = make_trainer(tmp_path, "data.train=synthetic:math_and_choice", "data.sampler=task_homogeneous",
                           "data.curriculum_key=difficulty")
    try:
        batches = [trainer.sampler.next_batch() for _ in range(6)]
    finally:
        trainer.close()
    for batch in batches:
        assert len({s.task for s in batch}) == 1
    assert {b[0].task for b in batches} == {"math", "multiple_choice"}


def test_frozen_parameters_stay_bit_identical(tmp_path):
    trainer = make_trainer(tmp_path, "actor.freeze=[model.layers.0.]")
    try:
        before = trainer.workers.actor.call("weights")[0]
        trainer.step(0)
        after = trainer.workers.actor.call("weights")[0]
    finally:
        trainer.close()
    frozen = [k for k in before if k.startswith("model.layers.0.")]
    assert frozen
    for name in frozen:
        assert torch.equal(before[name], after[name]), name
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("model.layers.1."))


def test_per_task_table_shows_each_task_and_the_unweighted_mean():
    from trainer.evaluate import per_task_lines

    before = {"eval/acc": 0.3, "eval/acc/count": 0.1, "eval/reward/count": 0.45,
              "eval/acc/grounding": 0.0, "eval/reward/grounding": 0.028, "eval/acc_task_mean": 0.05}
    after = {"eval/acc": 0.4, "eval/acc/count": 0.25, "eval/reward/count": 0.6,
             "eval/acc/grounding": 0.05, "eval/reward/grounding": 0.31, "eval/acc_task_mean": 0.15}
    lines = per_task_lines(before, after)
    assert len(lines) == 4 and lines[0].startswith("task")
    assert lines[1].split() == ["count", "10.0%", "->", "25.0%", "0.450", "->", "0.600"]
    assert lines[2].split() == ["grounding", "0.0%", "->", "5.0%", "0.028", "->", "0.310"]
    assert lines[3].split() == ["mean", "of", "tasks", "5.0%", "->", "15.0%"]
    assert per_task_lines({"eval/acc": 0.5}, {"eval/acc": 0.6}) == []  # one task: nothing to split


def test_overlong_prompts_are_dropped_and_counted_before_any_worker(tmp_path, capsys):
    # The tiny model's context is 256 tokens; quickstart prompts are 5-7 characters (tokens).
    trainer = Trainer(compose_config([f"trainer.output_dir={tmp_path}", *BASE, "data.max_prompt_tokens=5"]))
    try:
        lengths = [len(trainer.prompts.ids(s)) for s in trainer.train_samples + trainer.eval_samples]
        assert max(lengths) <= 5 and trainer.workers.actor is None and trainer.workers.rollout is None
        out = capsys.readouterr().out
        dropped = int(out.split("train: dropped ")[1].split(" of ")[0])
        assert dropped + len(trainer.train_samples) == 64 and dropped > 0
    finally:
        trainer.close()
    with pytest.raises(ValueError, match=r"every train prompt is longer than 1 tokens \(e.g. sample 'add-"):
        Trainer(compose_config([f"trainer.output_dir={tmp_path}/b", *BASE, "data.max_prompt_tokens=1"]))
    # Without the key, the limit is the model's context minus the response budget.
    trainer = Trainer(compose_config([f"trainer.output_dir={tmp_path}/c", *BASE, "rollout.eval_max_new_tokens=251"]))
    try:
        assert all(len(trainer.prompts.ids(s)) <= 5 for s in trainer.train_samples)
        assert len(trainer.train_samples) < 64
    finally:
        trainer.close()
    # data.overlong_prompts=error: the first overlong prompt stops the run before any worker, by name.
    with pytest.raises(ValueError, match=r"train prompt \d+ \(sample 'add-[0-9-]+'\) has \d+ tokens, over 5 "
                                         r".*of 64 are over \(data.overlong_prompts=skip drops them\)"):
        Trainer(compose_config([f"trainer.output_dir={tmp_path}/d", *BASE, "data.max_prompt_tokens=5",
                                "data.overlong_prompts=error"]))
    # A response budget as long as the context leaves no room for any prompt: said up front.
    with pytest.raises(ValueError, match=r"eval_max_new_tokens=256: the model's context is 256 tokens"):
        Trainer(compose_config([f"trainer.output_dir={tmp_path}/e", *BASE, "rollout.eval_max_new_tokens=256"]))


def test_chat_template_prompts_and_the_opened_think_reach_rollout_and_rewards(tmp_path, tiny_model_dir):
    import shutil

    from transformers import AutoTokenizer

    from trainer.rollout.sampling import Completion

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}={% endfor %}{% if add_generation_prompt %}<think>{% endif %}"
    tokenizer.save_pretrained(folder)
    trainer = Trainer(compose_config([f"trainer.output_dir={tmp_path}/run", *BASE, f"model.path={folder}",
                                      "data.chat_template=true"]))
    try:
        sample = trainer.train_samples[0]
        think = tokenizer.convert_tokens_to_ids("<think>")
        assert trainer.prompts.ids(sample) == tokenizer(sample.prompt + "=", add_special_tokens=False)["input_ids"] + [think]
        body = tokenizer("1+2=3</think><answer>\\boxed{3}</answer>", add_special_tokens=False)["input_ids"]
        completion = Completion(prompt_index=0, token_ids=body + [tokenizer.eos_token_id], logprobs=[0.0] * 9, finished=True)
        assert trainer.prompts.response_text(sample, completion) == "<think>1+2=3</think><answer>\\boxed{3}</answer>"
    finally:
        trainer.close()
