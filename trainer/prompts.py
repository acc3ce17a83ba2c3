"""Prompt rendering: a sample's token ids and processed images exactly as rollout and the actor see them,
and the response text rewards read. Every part of the trainer that puts a prompt to the model goes
through here, so images reach generation, log-probs and training alike."""

from __future__ import annotations

from data.schema import Sample
from trainer.chat import ChatFormat
from trainer.console import say
from trainer.rollout.sampling import Completion


class PromptRenderer:
    """Token ids (chat template, image placeholders expanded) and images for samples, for one model."""

    def __init__(self, tokenizer, chat: ChatFormat, model_dir: str, model_cfg):
        self.tokenizer, self.chat = tokenizer, chat
        self.model_dir, self.model_cfg = model_dir, model_cfg
        self._processor = None  # the vision-language processor, loaded with the first image prompt
        # id(sample) -> (sample, token ids, chat text); holding the sample keeps its id from being reused.
        self._rendered: dict[int, tuple[Sample, list[int], str | None]] = {}

    def ids(self, sample: Sample) -> list[int]:
        """The prompt's token ids exactly as rollout sees them (rendered once per sample)."""
        return list(self._render(sample)[1])

    def text_ids(self, text: str) -> list[int]:
        """Plain text (a thinking-mode prefix, a turn separator) as tokens, no special tokens added."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def media(self, sample: Sample):
        """The processed images of `sample` (None without images); re-read from disk, not kept in memory."""
        if not sample.images:
            return None
        from trainer.vision import encode_with_images

        text = self._render(sample)[2]
        return encode_with_images(self.processor(), text, sample.images, source=repr(sample.id))[1]

    def media_of(self, samples: list[Sample]) -> list | None:
        """Per sample its images, or None when no sample has any (text-only batches carry nothing)."""
        return [self.media(s) for s in samples] if any(s.images for s in samples) else None

    def response_text(self, sample: Sample, completion: Completion, mode_prefix: str = "") -> str:
        """The response as rewards read it: what the chat template and a thinking mode opened, then the
        generated text."""
        return self.chat.prefix_for(sample) + mode_prefix + self.chat.decode(completion.token_ids)

    def processor(self):
        """The model's vision-language processor (loaded once); an error for a text-only model."""
        if self._processor is None:
            from trainer.vision import is_vision_model, load_processor

            if not is_vision_model(self.model_dir):
                raise ValueError(f"the data has images but model.path={self.model_cfg.path!r} is a text-only model")
            cfg = self.model_cfg
            self._processor = load_processor(self.model_dir, cfg.image_min_pixels, cfg.image_max_pixels)
        return self._processor

    def _render(self, sample: Sample) -> tuple[Sample, list[int], str | None]:
        key = id(sample)
        if key not in self._rendered:
            if sample.images:
                from trainer.vision import encode_with_images

                text = self.chat.text(sample, template_owner=self.processor())
                ids, _ = encode_with_images(self.processor(), text, sample.images, source=repr(sample.id))
                self._rendered[key] = (sample, ids, text)
            else:
                self._rendered[key] = (sample, self.chat.ids(sample), None)
        return self._rendered[key]


def within_context(prompts: PromptRenderer, samples: list[Sample], limit: int | None, context: int | None,
                   split: str, overlong: str = "skip") -> list[Sample]:
    """The samples whose prompt is at most `limit` tokens; the rest are dropped and counted here rather
    than failing inside the rollout engine (`overlong="error"`: the first one stops the run instead)."""
    if limit is None or not samples:
        return samples
    lengths = [len(prompts.ids(s)) for s in samples]
    kept = [s for s, n in zip(samples, lengths) if n <= limit]
    if overlong == "error" and len(kept) < len(samples):
        first = next(i for i, n in enumerate(lengths) if n > limit)
        raise ValueError(f"{split} prompt {first} (sample {samples[first].id!r}) has {lengths[first]} tokens, over "
                         f"{limit} (the model's context {context} minus the response budget, or "
                         f"data.max_prompt_tokens); {len(samples) - len(kept)} of {len(samples)} are over "
                         "(data.overlong_prompts=skip drops them)")
    if not kept:
        longest = max(range(len(samples)), key=lengths.__getitem__)
        raise ValueError(f"every {split} prompt is longer than {limit} tokens (e.g. sample {samples[longest].id!r}: "
                         f"{lengths[longest]}); raise data.max_prompt_tokens or the model's context ({context}), "
                         "or lower rollout.max_new_tokens")
    if len(kept) < len(samples):
        say(f"[data] {split}: dropped {len(samples) - len(kept)} of {len(samples)} prompts longer than {limit} "
            f"tokens (context {context} minus the response budget; data.max_prompt_tokens)")
    return kept
