"""Image prompts through the engine: the tiny Qwen2-VL, image/feature checks, vision freezing, GRPO on Ray."""

from __future__ import annotations

import pytest
import torch

from trainer.compose import compose_config
from trainer.loop import Trainer
from trainer.vision import Media, vision_inputs

REWARDS = "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len', weight: 0.01}]}"


def vl_config(tmp_path, *extra):
    return compose_config([
        f"trainer.output_dir={tmp_path}", "model.path=tiny_vl", "data.train=synthetic:spatial_scenes",
        "rollout.engine=hf", "engine.ray=false", "sft.steps=0", "data.num_train=20", "data.num_eval=5",
        "data.prompts_per_step=2", "rollout.n=4", "rollout.max_new_tokens=8", "rollout.eval_max_new_tokens=8",
        "actor.mini_batch_size=8", "actor.micro_batch_size=4", "actor.lr=1e-2", "reward.num_workers=0",
        "tracking.wandb.mode=disabled", "tracking.console=false", "model.tiny.max_position_embeddings=512",
        # Reward by decoded length: random-init groups vary, so each step has a gradient.
        REWARDS, *extra,
    ])


def test_image_tokens_must_match_image_features():
    media = Media(pixel_values=torch.zeros(64, 1176), image_grid_thw=torch.tensor([[1, 8, 8]]), image_tokens=16,
                  source="'train-00007'")
    ids = torch.tensor([[1] * 5 + [9] * 16 + [2] * 3, [1] * 5 + [9] * 15 + [2] * 4])
    inputs = vision_inputs(ids[:1], [media], image_token_id=9)
    assert inputs["pixel_values"].shape == (64, 1176)
    assert inputs["mm_token_type_ids"].tolist() == [[0] * 5 + [1] * 16 + [0] * 3]
    with pytest.raises(ValueError, match=r"sample 'train-00007': 15 image tokens in the sequence but its images give 16"):
        vision_inputs(ids, [media, media], image_token_id=9)
    with pytest.raises(ValueError, match="row 0 \\(no images attached\\)"):
        vision_inputs(ids[:1], [None], image_token_id=9)


def test_vl_tokenizer_reads_scene_questions_as_words(tmp_path):
    from data.spatial_scenes import spatial_scenes
    from trainer.tiny_model import build_vl_tokenizer

    tokenizer = build_vl_tokenizer()
    train, _ = spatial_scenes(40, 0, seed=3, image_dir=tmp_path)
    for sample in train:
        question = sample.messages[0]["content"][1]["text"]
        ids = tokenizer(question, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == question
        # Every word is one token; only option letters, punctuation and newlines stand alone.
        for piece in (tokenizer.decode([i]) for i in ids):
            assert piece.strip() in {"", "?", ".", "A", "B"} or piece.strip().isalpha(), (question, piece)
        words = question.replace("?", " ").replace(".", " ").split()
        assert len(ids) <= len(words) * 2 + 2, question
    # Text outside the word list still round-trips byte by byte.
    text = "3+4=7, thermal école"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text and len(ids) > 15
    assert tokenizer.tokenize(" square") == ["Ġsquare"] and tokenizer.tokenize(" squ") == ["Ġsqu"]


def test_prompt_ids_carry_one_pad_per_merged_patch(tmp_path):
    trainer = Trainer(vl_config(tmp_path))
    try:
        sample = trainer.train_samples[0]
        ids = trainer._encode_prompt(sample)
        pad = trainer.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        media = trainer._media(sample)
        # 112 x 112 pixels = 8 x 8 patches of 14; 2 x 2 merged -> 16 image tokens.
        assert media.image_grid_thw.tolist() == [[1, 8, 8]] and ids.count(pad) == media.image_tokens == 16
        assert trainer.tokenizer.decode(ids).endswith("<|im_end|>\n<|im_start|>assistant\n")
        smaller = Trainer(vl_config(tmp_path / "small", "model.image_max_pixels=3136", "model.image_min_pixels=3136"))
        assert smaller._media(smaller.train_samples[0]).image_tokens == 4  # 56 x 56: 4 x 4 patches -> 4 tokens
    finally:
        trainer.close()


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_vision_keeps_the_tower_bit_identical(tmp_path, freeze):
    trainer = Trainer(vl_config(tmp_path, f"actor.freeze_vision={str(freeze).lower()}"))
    try:
        trainer._start_workers(trainer.base_model_path)
        before = trainer.actor.call("weights")[0]
        metrics = trainer.step(0)
        after = trainer.actor.call("weights")[0]
    finally:
        trainer.close()
    assert metrics["actor/grad_norm"] > 0
    vision = [k for k in before if k.startswith("model.visual.")]
    assert any("merger" in k for k in vision) and len(vision) > 10
    vision_moved = [k for k in vision if not torch.equal(before[k], after[k])]
    language_moved = [k for k in before if k not in vision and not torch.equal(before[k], after[k])]
    assert language_moved, "the language model did not train"
    if freeze:
        assert vision_moved == []
    else:
        assert len(vision_moved) > len(vision) // 2


def test_vllm_with_images_needs_torchvision(tmp_path):
    from trainer.vision import has_torchvision

    if has_torchvision():
        pytest.skip("torchvision is installed: vLLM can process images here")
    with pytest.raises(ValueError, match="rollout.engine=vllm: the data has images.*use rollout.engine=hf"):
        Trainer(vl_config(tmp_path, "rollout.engine=vllm"))


@pytest.mark.slow
def test_grpo_on_image_prompts_through_ray(tmp_path):
    trainer = Trainer(vl_config(
        tmp_path, "engine.ray=true", "sft.steps=4", "sft.batch_size=4", "algorithm.kl_coef=0.01",
        "resources.actor.num_cpus=0.5", "resources.rollout.num_cpus=0.5", "resources.reference.num_cpus=0.5",
    ))
    try:
        policy = trainer._cold_start_sft()
        trainer._start_workers(policy)
        metrics = [trainer.step(step) for step in range(2)]
        evaluation = trainer.evaluate()
    finally:
        trainer.close()
        import ray

        ray.shutdown()
    for m in metrics:
        assert m["batch/kept_completions"] == 8
        # The engine's log-probs (with the images) equal the actor's recomputation of the same sequences.
        assert m["logp_mismatch"] < 1e-4
        assert m["actor/grad_norm"] > 0
    assert metrics[1]["actor/kl"] > 0  # the reference (with images) differs from the updated actor
    assert evaluation["eval/total"] == 5 and "eval/reward/count" in evaluation
