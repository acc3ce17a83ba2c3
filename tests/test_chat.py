"""Chat conventions: templates that open <think>, templates with thinking switches, system prompts, the
stop set both engines share, and the response text rewards read. Each tokenizer fixture reproduces one
convention with a template written here."""

from __future__ import annotations

import json

import pytest

from data.schema import Sample
from rewards.format import format_reward
from rewards.math_answer import boxed_answer
from trainer.chat import ChatFormat, stop_token_ids
from trainer.tiny_model import build_vl_tokenizer

# DeepSeek-R1-Distill layout: the generation prompt ends inside an opened thought.
R1_DISTILL = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'user' %}<|im_start|>User: {{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|im_start|>Assistant: {{ m['content'] }}<|im_end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>Assistant: <think>\n{% endif %}"
)
# Qwen3 layout: `enable_thinking=false` writes an empty, closed thought into the generation prompt.
QWEN3 = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
# R-4B layout: `thinking_mode` is auto (the model decides), long (thought opened) or short (empty thought).
R4B = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if thinking_mode == 'long' %}<think>\n{% elif thinking_mode == 'short' %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)
SAMPLE = Sample(prompt="What is 1 + 2?", ground_truth="3", id="s0")


def tokenizer_with(template: str):
    tokenizer = build_vl_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_r1_distill_template_puts_the_opened_think_back_for_rewards():
    tokenizer = tokenizer_with(R1_DISTILL)
    chat = ChatFormat(tokenizer, use_template=True)
    assert chat.response_prefix == "<think>\n"
    assert chat.text(SAMPLE) == "<|im_start|>User: What is 1 + 2?<|im_start|>Assistant: <think>\n"
    assert chat.ids(SAMPLE) == ids(tokenizer, chat.text(SAMPLE))
    generated = ids(tokenizer, "1 + 2 = 3</think><answer>\\boxed{3}</answer>") + [tokenizer.eos_token_id]
    text = chat.prefix_for(SAMPLE) + chat.decode(generated)
    assert text == "<think>\n1 + 2 = 3</think><answer>\\boxed{3}</answer>"
    # The reward reads it as the model's parser does: a complete thought, then the answer.
    assert format_reward(text, SAMPLE).score == 1.0
    assert format_reward(chat.decode(generated), SAMPLE).score == 0.0  # without the prefix: no <think>
    assert boxed_answer(text, SAMPLE).score == 1.0
    # An SFT target written with its <think> loses the part the prompt already opened.
    assert chat.sft_target(SAMPLE, "<think>\nx</think>y") == "x</think>y"
    assert chat.sft_target(SAMPLE, "<think>x</think>y") == "x</think>y"


@pytest.mark.parametrize("template, kwargs, opened", [
    (QWEN3, {}, ""),
    (QWEN3, {"enable_thinking": True}, ""),
    (QWEN3, {"enable_thinking": False}, "<think>\n\n</think>\n\n"),
    (R4B, {"thinking_mode": "auto"}, ""),
    (R4B, {"thinking_mode": "long"}, "<think>\n"),
    (R4B, {"thinking_mode": "short"}, "<think>\n\n</think>\n\n"),
])
def test_thinking_switches_reach_the_template_and_the_reward_text(template, kwargs, opened):
    chat = ChatFormat(tokenizer_with(template), use_template=True, template_kwargs=kwargs)
    assert chat.response_prefix == opened
    assert chat.text(SAMPLE).endswith("<|im_start|>assistant\n" + opened)
    # An opened thought must be closed by the model; one it never closes holds no answer.
    generated = ("1 + 2 = 3\n</think>\n\n" if opened == "<think>\n" else "") + "The answer is \\boxed{3}."
    text = chat.prefix_for(SAMPLE) + chat.decode(ids(chat.tokenizer, generated))
    assert text == opened + generated
    if opened:
        mode = "r4b_non_thinking" if opened.endswith("</think>\n\n") else "r4b_thinking"
        assert format_reward(text, SAMPLE, mode=mode).score == 1.0
    assert boxed_answer(text, SAMPLE).score == 1.0
    if opened == "<think>\n":
        assert boxed_answer(opened + "The answer is \\boxed{3}.", SAMPLE).details["reason"] == "unterminated <think>"


def test_system_prompt_and_plain_prompts():
    tokenizer = tokenizer_with(QWEN3)
    chat = ChatFormat(tokenizer, use_template=True, system_prompt="Think first.")
    assert chat.text(SAMPLE).startswith("<|im_start|>system\nThink first.<|im_end|>\n<|im_start|>user\nWhat is 1 + 2?")
    own = Sample(messages=[{"role": "system", "content": "Mine."}, {"role": "user", "content": "Hi"}])
    assert chat.text(own).count("system") == 1 and "Mine." in chat.text(own)
    # Without data.chat_template a plain prompt goes in as is, and nothing is put in front of responses.
    plain = ChatFormat(tokenizer_with(R1_DISTILL))
    assert plain.text(SAMPLE) == "What is 1 + 2?" and plain.prefix_for(SAMPLE) == ""
    # ...but chat messages are always templated.
    assert plain.prefix_for(Sample(messages=[{"role": "user", "content": "Hi"}])) == "<think>\n"


def test_template_needed_but_missing_names_the_sample():
    tokenizer = build_vl_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="sample 's0' needs a chat template"):
        ChatFormat(tokenizer, use_template=True).text(SAMPLE)


def test_stop_set_merges_generation_config_eos_ids(tmp_path):
    tokenizer = build_vl_tokenizer()
    eos = tokenizer.eos_token_id
    assert stop_token_ids(tokenizer, tmp_path) == (eos,)  # no generation_config.json
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, 3, 4]}))
    assert stop_token_ids(tokenizer, tmp_path) == (eos, 3, 4)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 5}))
    chat = ChatFormat(tokenizer, model_dir=tmp_path)
    assert chat.stop_ids == (eos, 5)
    # A response that ended on either stop id decodes without it.
    body = ids(tokenizer, "ok")
    assert chat.decode(body + [5]) == chat.decode(body + [eos]) == "ok"
