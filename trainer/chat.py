"""How the trainer talks to a model: prompts rendered as its chat template renders them, the part of
the response the template already opened, the ids generation stops on, and response text for rewards.

Thinking models differ in where `<think>` goes. An R1-distill template ends its generation prompt with
`<think>\\n`, so the model's output starts inside the thought; Qwen3 with `enable_thinking=False` ends it
with an empty `<think>\\n\\n</think>\\n\\n`. Either way the reward must read the response as the model's
own output parser does, so the opened part is put back in front of the generated text (`response_prefix`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data.schema import Sample

THINK_OPEN = "<think>"


def stop_token_ids(tokenizer, model_dir: str | Path | None = None) -> tuple[int, ...]:
    """The tokenizer's EOS and every `eos_token_id` of the model's generation_config.json, as vLLM
    merges them; both rollout engines stop on this one set."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    config = Path(model_dir) / "generation_config.json" if model_dir else None
    if config is not None and config.is_file():
        eos = json.loads(config.read_text()).get("eos_token_id")
        ids += eos if isinstance(eos, list) else [eos] if eos is not None else []
    return tuple(dict.fromkeys(int(i) for i in ids))


class ChatFormat:
    """Prompt text and ids for samples, and response text for rewards, for one tokenizer.

    use_template: wrap plain `prompt` strings as one user turn and apply the chat template (samples
    with `messages` or images always are). system_prompt: a system turn put first where the sample has
    none. template_kwargs: extra template variables (e.g. {enable_thinking: false} for Qwen3).
    """

    def __init__(self, tokenizer, *, model_dir: str | Path | None = None, use_template: bool = False,
                 system_prompt: str | None = None, template_kwargs: dict[str, Any] | None = None):
        self.tokenizer = tokenizer
        self.use_template = use_template
        self.system_prompt = system_prompt
        self.template_kwargs = dict(template_kwargs or {})
        self.stop_ids = stop_token_ids(tokenizer, model_dir)
        self.response_prefix = self._opened_by_template() if self._templated_at_all() else ""

    @classmethod
    def from_config(cls, tokenizer, model_dir: str | Path | None, data_cfg) -> "ChatFormat":
        """The format a run's `data` config asks for (chat_template, system_prompt,
        apply_chat_template_kwargs); built here for the trainer and `--check` alike."""
        return cls(tokenizer, model_dir=model_dir, use_template=data_cfg.chat_template,
                   system_prompt=data_cfg.system_prompt, template_kwargs=dict(data_cfg.apply_chat_template_kwargs))

    def _templated_at_all(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def _opened_by_template(self) -> str:
        """The tail of the generation prompt from its last `<think>` on ('' when it opens none)."""
        probe = [{"role": "user", "content": "x"}]
        with_prompt = self.tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False,
                                                         **self.template_kwargs)
        without = self.tokenizer.apply_chat_template(probe, add_generation_prompt=False, tokenize=False,
                                                     **self.template_kwargs)
        tail = with_prompt[len(without):] if with_prompt.startswith(without) else with_prompt
        at = tail.rfind(THINK_OPEN)
        return tail[at:] if at >= 0 else ""

    def messages(self, sample: Sample) -> list[dict[str, Any]]:
        """The conversation the template renders; a plain prompt with images puts the images first."""
        if sample.messages is not None:
            messages = list(sample.messages)
        elif sample.images:
            messages = [{"role": "user", "content": [{"type": "image"}] * len(sample.images)
                         + [{"type": "text", "text": sample.prompt}]}]
        else:
            messages = [{"role": "user", "content": sample.prompt}]
        if self.system_prompt and messages[0].get("role") != "system":
            messages = [{"role": "system", "content": self.system_prompt}] + messages
        return messages

    def templated(self, sample: Sample) -> bool:
        return sample.messages is not None or bool(sample.images) or self.use_template

    def text(self, sample: Sample, template_owner=None) -> str:
        """The prompt text as rollout sees it. `template_owner` renders instead of the tokenizer (a vision
        processor, whose template knows image entries)."""
        if not self.templated(sample):
            return sample.prompt
        owner = template_owner or self.tokenizer
        if not getattr(owner, "chat_template", None):
            raise ValueError(f"sample {sample.id!r} needs a chat template (chat messages, images or "
                             "data.chat_template=true) but the tokenizer has none")
        return owner.apply_chat_template(self.messages(sample), add_generation_prompt=True, tokenize=False,
                                         **self.template_kwargs)

    def ids(self, sample: Sample) -> list[int]:
        """Token ids of a text-only prompt (the template writes any special tokens itself)."""
        return self.tokenizer(self.text(sample), add_special_tokens=False)["input_ids"]

    def prefix_for(self, sample: Sample) -> str:
        """What the prompt already opened of this sample's response."""
        return self.response_prefix if self.templated(sample) else ""

    def decode(self, token_ids: list[int]) -> str:
        """Generated tokens as text, without the stop token it ended on."""
        if token_ids and token_ids[-1] in self.stop_ids:
            token_ids = token_ids[:-1]
        return self.tokenizer.decode(token_ids, skip_special_tokens=False)

    def sft_target(self, sample: Sample, target: str) -> str:
        """An SFT target without the part the prompt already opened (it would be written twice)."""
        prefix = self.prefix_for(sample)
        for opened in (prefix, prefix.strip()):
            if opened and target.startswith(opened):
                return target[len(opened):]
        return target
