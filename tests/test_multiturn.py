"""Multi-turn rollouts against a real simulator server (the tiny model behind the OpenAI-compatible endpoint)."""

import pytest

from trainer.recipe_config import compose_config
from trainer.loop import Trainer

pytestmark = pytest.mark.slow


def test_dialogues_interleave_policy_and_simulator_turns(tmp_path):
    cfg = compose_config([
        f"trainer.output_dir={tmp_path}", "engine.ray=false", "rollout.engine=hf", "sft.steps=0",
        "data.num_train=16", "data.num_eval=2", "data.prompts_per_step=2", "rollout.n=2", "rollout.max_new_tokens=6",
        "actor.mini_batch_size=4", "actor.micro_batch_size=4", "reward.num_workers=0",
        "tracking.wandb.mode=disabled", "tracking.console=false",
        "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.1}]}",
        "rollout.multiturn.turns=3", "rollout.multiturn.simulator_local_model=policy",
        "rollout.multiturn.simulator_max_tokens=5", "rollout.multiturn.turn_separator=','",
    ])
    trainer = Trainer(cfg)
    try:
        trainer.start_workers(trainer.base_model_path)
        rollouts = trainer.collector.round(trainer.sampler.next_batch(), seed=3)
        metrics = trainer.step(1)
        requests = trainer.collector.simulator.client.stats["requests"]
        failures = trainer.collector.simulator.failures
    finally:
        trainer.close()
    assert len(rollouts.items) == 4
    for completion in [r.completion for r in rollouts.items]:
        mask = completion.loss_mask
        assert len(mask) == len(completion.token_ids) == len(completion.logprobs)
        # Two simulator replies, each wrapped in separators (the random tiny simulator may reply with
        # nothing, so count the separators): at least 4 context-only tokens, and they are the ones masked.
        assert mask.count(0) >= 4
        separator = trainer.prompts.tokenizer.convert_tokens_to_ids(",")
        masked = [t for t, m in zip(completion.token_ids, mask) if m == 0]
        assert masked.count(separator) >= 4
        # The last turn is the policy's, and it always holds at least its end-of-text or one token.
        assert mask[-1] == 1
        # Simulator tokens carry no log-prob and no loss.
        assert all(lp == 0.0 for lp, m in zip(completion.logprobs, mask) if m == 0)
    # Two replies per dialogue went over HTTP to the simulator (the cache may answer repeats), all answered.
    assert requests >= 1 and failures == 0 and "reward_failures/simulator/error" not in metrics
    assert metrics["batch/kept_completions"] == 4 and "actor/policy_loss" in metrics
