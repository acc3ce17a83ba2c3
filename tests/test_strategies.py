"""FSDP2 and DeepSpeed ZeRO data parallel across 2 Ray actor processes (gloo on CPU) against the plain strategy."""

from __future__ import annotations


import pytest
import torch

from trainer.batch import TrainBatch
from trainer.checkpoint import load_checkpoint
from trainer.config import ActorConfig, AlgorithmConfig, RoleResources
from trainer.strategies.factory import make_strategy
from trainer.stages.sft import run_sft
from trainer.workers.actor import ActorWorker
from trainer.workers.group import WorkerGroup, init_ray

UPDATES = 3


def batch_for(actor_log_probs, seed: int) -> TrainBatch:
    """10 sequences of uneven lengths; with mini-batches of 5 over 2 ranks one rank gets 3 rows and
    the other 2, so the zero-weight padding micro-batch is exercised."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(2, 20, (int(torch.randint(3, 7, (1,), generator=g)),), generator=g).tolist()
               for _ in range(10)]
    responses = [torch.randint(2, 20, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g).tolist()
                 for _ in range(10)]
    batch = TrainBatch.from_sequences(prompts, responses, pad_id=0)
    batch.advantages = torch.randn(10, generator=g)
    batch.old_logprobs = actor_log_probs(batch)
    batch.ref_logprobs = batch.old_logprobs + 0.05 * torch.randn(batch.old_logprobs.shape, generator=g)
    return batch


def configs(strategy: str, **extra):
    actor = ActorConfig(strategy=strategy, lr=5e-3, mini_batch_size=5, micro_batch_size=2, threads=1,
                               grad_clip=1.0, **extra)
    # k3 KL with a coefficient, so the reference term is part of what must match.
    algorithm = AlgorithmConfig(loss_agg="token_mean", kl_coef=0.1, kl_estimator="k3", eps_high=0.28)
    return dict(actor=actor, algorithm=algorithm, dtype="float32", seed=0, max_len=8)


def plain_run(model_dir) -> tuple[list[dict], dict[str, torch.Tensor]]:
    actor = ActorWorker(model_dir, **configs("torch"))
    history = []
    for step in range(UPDATES):
        batch = batch_for(lambda b: actor.log_probs(b, 1.0), seed=step)
        history.append(actor.update(batch, 1.0))
    return history, actor.weights()


def sharded_group(model_dir, strategy: str, **extra) -> WorkerGroup:
    group = WorkerGroup("actor", ActorWorker, RoleResources(count=2, num_cpus=0.5), use_ray=True, ranked=True,
                        model_path=model_dir, **configs(strategy, **extra))
    host, port = group.call_one(0, "rendezvous_address")
    group.call("init_distributed", host, port)
    return group


def assert_metrics_match(got: dict, want: dict, when: str, rel: float = 1e-5) -> None:
    for key in ("policy_loss", "grad_norm", "kl", "entropy", "clip_frac", "optimizer_steps"):
        assert got[key] == pytest.approx(want[key], rel=rel, abs=1e-7), f"{key} differs {when}"


@pytest.fixture(scope="module")
def plain(tiny_model_dir):
    return plain_run(tiny_model_dir)


SHARDED = {
    "fsdp2_reshard": ("fsdp2", {"reshard_after_forward": True}),  # ZeRO-3-like
    "fsdp2_keep": ("fsdp2", {"reshard_after_forward": False}),  # ZeRO-2-like
    "zero2": ("deepspeed", {"zero_stage": 2}),
    "zero3": ("deepspeed", {"zero_stage": 3}),
}


# The checkpoint check runs on these two setups' groups, after the matched updates (one group start each).
CHECKPOINTED = ("fsdp2_reshard", "zero2")


@pytest.mark.slow
@pytest.mark.parametrize("setup", list(SHARDED))
def test_two_ranks_match_plain_training(tiny_model_dir, tmp_path, plain, setup):
    plain_history, plain_weights = plain
    init_ray(None, None, 2)
    strategy, extra = SHARDED[setup]
    group = sharded_group(tiny_model_dir, strategy, **extra)
    try:
        history = []
        for step in range(UPDATES):
            batch = batch_for(lambda b: group.call("log_probs", b, 1.0)[0], seed=step)
            history.append(group.call("update", batch, 1.0))
        for step, (per_rank, want) in enumerate(zip(history, plain_history)):
            # Every rank reports the same reduced metrics, equal to one worker on the whole batch.
            for got in per_rank:
                # Same weights at update 0: float-level agreement. Later, Adam's ~lr*sign(grad) steps
                # turn summation-order noise into ~1e-5 weight differences, so allow 1e-3.
                assert_metrics_match(got, want, f"at update {step}", rel=1e-5 if step == 0 else 1e-3)
        weights = group.call("weights")
        assert weights[1] is None
        for key, value in plain_weights.items():
            # Adam moves each weight by about lr * sign(grad) = 5e-3 per step, so float-level gradient
            # differences (sums in another order) show up as ~1e-5, and as up to a few 1e-4 on the odd
            # weight whose gradient is near zero; a real divergence moves weights by ~lr.
            diff = (weights[0][key] - value).abs()
            assert float(diff.max()) < 1e-3 and float(diff.mean()) < 1e-5, f"{key} after {UPDATES} updates"
        moved = sum(float((weights[0][k] - v).abs().sum()) for k, v in ActorWorker(
            tiny_model_dir, **configs("torch")).weights().items())
        assert moved > 0
        if setup in CHECKPOINTED:
            checkpoint_resumes_the_same_update(group, strategy, tmp_path, tiny_model_dir)
    finally:
        group.shutdown()


def checkpoint_resumes_the_same_update(group: WorkerGroup, strategy: str, tmp_path, model_dir: str) -> None:
    """Save (as a run's checkpoint), export it, update, restore, update again: the same update; then the
    gathered Hugging Face folder."""
    from trainer.checkpoint import save_checkpoint
    from trainer.export_command import export_checkpoint
    from trainer.modeling import load_causal_lm

    at_save = group.call("weights")[0]
    saved_step = save_checkpoint(tmp_path / "checkpoints", UPDATES, {"policy": {"model": model_dir, "tokenizer": model_dir}},
                                 folders={"actor": lambda path: group.call("save_checkpoint", str(path))[0]})
    folder = saved_step / "actor"
    small = load_checkpoint(saved_step)["actor"]
    # `python -m trainer export` reads either format in one process: the weights as they were saved.
    exported = load_causal_lm(str(export_checkpoint(saved_step, tmp_path / "exported"))).state_dict()
    for key, value in at_save.items():
        assert torch.equal(exported[key], value), key
    files = sorted(p.name for p in folder.rglob("*") if p.is_file())
    if strategy == "fsdp2":
        assert files == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # each rank wrote its own shard
    else:  # DeepSpeed: each rank's optimiser partition in its own file
        assert sum("optim_states" in f for f in files) == 2, files
    after = batch_for(lambda b: group.call("log_probs", b, 1.0)[0], seed=UPDATES)
    first_try = group.call("update", after, 1.0)[0]
    group.call("load_checkpoint", str(folder), small)
    second_try = group.call("update", after, 1.0)[0]
    assert_metrics_match(second_try, first_try, "after restoring the checkpoint")

    # A small file size: the folder is written in several files, as the weights are gathered.
    group.call("save_pretrained", str(tmp_path / "saved"), 64 << 10)
    assert len(list((tmp_path / "saved").glob("model-*-of-*.safetensors"))) > 1
    saved = load_causal_lm(str(tmp_path / "saved")).state_dict()
    gathered = group.call("weights")[0]
    for key, value in gathered.items():
        assert torch.equal(saved[key], value), key


@pytest.mark.parametrize("strategy", ["fsdp2", "deepspeed"])
def test_sharded_strategy_without_a_process_group_says_how_to_run_it(tiny_model_dir, strategy):
    from trainer.modeling import load_causal_lm

    with pytest.raises(RuntimeError, match="resources.actor.count"):
        make_strategy(strategy, load_causal_lm(tiny_model_dir), lr=1e-3, weight_decay=0.0, betas=[0.9, 0.999],
                      warmup_steps=0)


def test_unknown_strategy_lists_the_available_ones(tiny_model_dir):
    from trainer.modeling import load_causal_lm

    with pytest.raises(ValueError, match="available: \\['deepspeed', 'fsdp2', 'torch'\\]"):
        make_strategy("zero9", load_causal_lm(tiny_model_dir), lr=1e-3)


@pytest.mark.slow
def test_cold_start_sft_through_zero3_matches_plain(tiny_model_dir):
    prompts = [[2, 3, 11, 4], [5, 11, 6], [7, 8, 11, 9, 4]]
    targets = [[15, 7, 8, 14], [15, 9, 14], [15, 1, 2, 3, 14]]
    args = dict(steps=4, batch_size=4, lr=1e-2, weight_decay=0.0, pad_id=0, log_every=1)
    plain_curve = ActorWorker(tiny_model_dir, **configs("torch")).sft(prompts, targets, **args)
    init_ray(None, None, 2)
    group = sharded_group(tiny_model_dir, "deepspeed", zero_stage=3)
    try:
        curves = group.call("sft", prompts, targets, **args)
    finally:
        group.shutdown()
    assert [step for step, _ in curves[0]] == [1, 2, 3, 4]
    assert curves[0] == curves[1]
    for (_, got), (_, want) in zip(curves[0], plain_curve):
        assert got == pytest.approx(want, rel=1e-4)
    assert plain_curve[-1][1] < plain_curve[0][1]  # it learns


@pytest.mark.slow
def test_rl_after_sharded_sft_starts_with_the_rl_optimiser(tmp_path):
    """SFT through a sharded strategy trains with sft.lr; the RL stage must not inherit that optimiser."""
    from trainer.checkpoint import read_shards
    from trainer.recipe_config import compose_config
    from trainer.loop import Trainer

    trainer = Trainer(compose_config([
        f"trainer.output_dir={tmp_path}", "engine.ray=true", "rollout.engine=hf", "sft.steps=2", "sft.batch_size=4",
        "sft.lr=1e-2", "actor.lr=1e-4", "actor.strategy=fsdp2", "resources.actor.count=2",
        "resources.actor.num_cpus=0.5", "data.num_train=16", "data.num_eval=4", "data.prompts_per_step=2",
        "rollout.n=2", "rollout.max_new_tokens=4", "actor.mini_batch_size=4", "actor.micro_batch_size=2",
        "reward.num_workers=0", "tracking.wandb.mode=disabled", "tracking.console=false",
        "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.1}]}",
    ]))
    try:
        policy = run_sft(trainer)
        trainer.start_workers(policy)
        metrics = trainer.step(0)
        trainer.workers.actor.call("save_checkpoint", str(tmp_path / "actor"))
        optimiser = read_shards(tmp_path / "actor")["optimizer"]
    finally:
        trainer.close()
    assert metrics["actor/lr"] == pytest.approx(1e-4) and metrics["actor/optimizer_steps"] == 1
    # Adam has taken exactly the one RL step: none of the 2 SFT steps carried over.
    assert {float(state["step"]) for state in optimiser["state"].values()} == {1.0}


def test_staged_sft_draws_only_from_the_admitted_stages(tiny_model_dir):
    """Before stage 1 comes in, staged SFT on four samples is exactly SFT on the two of stage 0."""
    prompts = [[2, 3, 11, 4], [5, 11, 6], [7, 8, 11, 9, 4], [3, 3, 11]]
    targets = [[15, 7, 8, 14], [15, 9, 14], [15, 1, 2, 3, 14], [15, 4, 4, 14]]
    args = dict(steps=4, batch_size=3, lr=1e-2, weight_decay=0.0, pad_id=0, log_every=1)
    stage_zero_only = ActorWorker(tiny_model_dir, **configs("torch")).sft(prompts[:2], targets[:2], **args)
    late = ActorWorker(tiny_model_dir, **configs("torch")).sft(prompts, targets, stages=[0, 0, 1, 1],
                                                               stage_steps=100, **args)
    assert late == stage_zero_only
    early = ActorWorker(tiny_model_dir, **configs("torch")).sft(prompts, targets, stages=[0, 0, 1, 1],
                                                                stage_steps=2, **args)
    assert early[:2] == stage_zero_only[:2] and early[2:] != stage_zero_only[2:]


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean"])
def test_sft_loss_aggregation_by_hand(tiny_model_dir, loss_agg):
    """The first SFT loss is the initial model's NLL of the drawn targets, averaged per token or per sample."""
    prompts, targets = [[2, 3, 11, 4], [5, 11, 6]], [[15, 7, 8, 9, 1, 2, 14], [15, 9]]
    rows = torch.randint(2, (4,), generator=torch.Generator().manual_seed(0)).tolist()  # the actor's draw (seed 0)
    assert set(rows) == {0, 1}  # both lengths in the batch, so the two averages differ
    batch = TrainBatch.from_sequences([prompts[i] for i in rows], [targets[i] for i in rows], 0)
    nll = -ActorWorker(tiny_model_dir, **configs("torch")).log_probs(batch, 1.0)
    lengths = [len(targets[i]) for i in rows]
    per_row = [float(nll[r, :n].sum()) for r, n in enumerate(lengths)]
    expected = (sum(per_row) / sum(lengths) if loss_agg == "token_mean"
                else sum(total / n for total, n in zip(per_row, lengths)) / len(rows))
    curve = ActorWorker(tiny_model_dir, **configs("torch")).sft(
        prompts, targets, steps=1, batch_size=4, lr=1e-2, weight_decay=0.0, pad_id=0, log_every=1, loss_agg=loss_agg)
    assert curve[0][1] == pytest.approx(expected, rel=1e-5)
