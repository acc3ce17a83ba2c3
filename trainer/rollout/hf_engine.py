"""The HF rollout engine: a Transformers model with a decode loop of its own (the faster engine for tiny
models on CPU, see `choose_engine`), and the exact reference for log-prob parity.

Text prompts of any lengths decode as one left-padded batch; position ids count from each row's first real
token, as in training, so padding changes no log-prob beyond float rounding. Vision-language models go
through `generate`, prompts grouped by length: their rotary positions come from the image grid, not a mask.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    SuppressTokensLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
)

from trainer.rollout.sampling import Completion, SamplingSpec
from trainer.modeling import forward_inputs, image_token_id, load_causal_lm


class HFEngine:
    def __init__(self, model_path: str, *, dtype: str = "float32", seed: int = 0, **_unused):
        self.model = load_causal_lm(model_path, dtype)
        self.model.eval()
        # The hub's sampling defaults (temperature, top-p, repetition penalty) must not change what is sampled:
        # the SamplingSpec is the only source, as it is for vLLM.
        self.model.generation_config = GenerationConfig()
        self.seed = seed
        # A sampled image placeholder would claim image features that do not exist (and fail the next forward
        # pass): vision-language models never generate their vision markers.
        config = self.model.config
        self.suppressed = [getattr(config, key) for key in
                           ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
                           if getattr(config, key, None) is not None]
        self.vision = image_token_id(self.model) is not None

    @torch.no_grad()
    def generate(
        self, prompts: list[list[int]], spec: SamplingSpec, indices: list[int] | None = None,
        media: list | None = None,
    ) -> list[Completion]:
        """`media[i]` (trainer.vision.Media or None) holds prompt i's images."""
        if not prompts:  # an engine can be handed an empty share of a step's prompts
            return []
        indices = list(range(len(prompts))) if indices is None else indices
        media = media or [None] * len(prompts)
        if not self.vision:  # a text model: one batch through the decode loop
            groups = [list(range(len(prompts)))]
        else:  # a vision-language model: generate, one prompt length at a time
            by_length: dict[int, list[int]] = defaultdict(list)
            for index, prompt in enumerate(prompts):
                by_length[len(prompt)].append(index)
            groups = [by_length[length] for length in sorted(by_length)]
        results: dict[int, list[Completion]] = {}
        for group in groups:
            # Seeded from the call seed, so re-running a step samples the same tokens.
            torch.manual_seed(spec.seed + indices[group[0]])
            if not self.vision:
                completions = self._decode([prompts[i] for i in group], spec)
            else:
                completions = self._sample([prompts[i] for i in group], [media[i] for i in group], spec)
            for row, completion in enumerate(completions):  # generate repeats each prompt n times
                completion.prompt_index = indices[group[row // spec.n]]
                results.setdefault(completion.prompt_index, []).append(completion)
        return [c for i in indices for c in results[i]]

    def _decode(self, prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
        """Text prompts, left-padded, decoded step by step with a KV cache that drops each row when it stops
        (HF `generate` keeps computing finished rows until the longest ends). Each prompt's prefix runs once
        and its cache is repeated n times. Log-probs are read off each step's logits / temperature."""
        model, device = self.model, self.model.device
        width, n, steps = max(len(p) for p in prompts), spec.n, spec.max_new_tokens
        pad = spec.stop_token_ids[0] if spec.stop_token_ids else 0
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1].repeat_interleave(n, 0)
        cache.batch_repeat_interleave(n)
        mask, position = mask.repeat_interleave(n, 0), positions[:, -1].repeat_interleave(n, 0) + 1
        rows = len(prompts) * n
        tokens = torch.full((rows, steps), pad, dtype=torch.long, device=device)
        logprobs = torch.zeros(rows, steps, device=device)
        lengths = torch.full((rows,), steps, device=device)
        finished = torch.zeros(rows, dtype=torch.bool, device=device)
        stop = torch.tensor(spec.stop_token_ids, dtype=torch.long, device=device)
        live = torch.arange(rows, device=device)  # the rows still decoding, in cache order
        warpers = self._warpers(spec)
        for step in range(steps):
            scores = logits.float()
            logp = torch.log_softmax(scores / (spec.temperature if not spec.greedy else 1.0), dim=-1)
            scores = warpers(None, scores)
            token = scores.argmax(-1) if spec.greedy else torch.multinomial(torch.softmax(scores, -1), 1)[:, 0]
            tokens[live, step] = token
            logprobs[live, step] = logp.gather(-1, token[:, None])[:, 0]
            ended = torch.isin(token, stop)
            lengths[live[ended]], finished[live[ended]] = step + 1, True
            keep = (~ended).nonzero()[:, 0]
            if step + 1 == steps or len(keep) == 0:
                break
            if len(keep) < len(live):
                cache.batch_select_indices(keep)
                live, token, mask, position = live[keep], token[keep], mask[keep], position[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None],
                           past_key_values=cache, use_cache=True).logits[:, -1]
            position = position + 1
        return [Completion(prompt_index=-1, token_ids=row[:length], logprobs=lp[:length], finished=done)
                for row, lp, length, done in zip(tokens.tolist(), logprobs.tolist(), lengths.tolist(),
                                                 finished.tolist())]

    def _warpers(self, spec: SamplingSpec) -> LogitsProcessorList:
        """What turns logits into the sampling distribution: suppressed tokens, temperature, top-k, top-p."""
        warpers = [SuppressTokensLogitsProcessor(self.suppressed, device=self.model.device)] if self.suppressed else []
        if not spec.greedy:
            warpers += [TemperatureLogitsWarper(spec.temperature)] if spec.temperature != 1.0 else []
            warpers += [TopKLogitsWarper(spec.top_k)] if spec.top_k > 0 else []
            warpers += [TopPLogitsWarper(spec.top_p)] if spec.top_p < 1.0 else []
        return LogitsProcessorList(warpers)

    def _sample(self, prompts: list[list[int]], media: list, spec: SamplingSpec) -> list[Completion]:
        """A vision-language model's prompts, all of one length, through `generate`."""
        device = self.model.device
        width = len(prompts[0])
        pad = spec.stop_token_ids[0] if spec.stop_token_ids else 0
        input_ids = torch.tensor(prompts, device=device)
        mask = torch.ones_like(input_ids)
        stop = set(spec.stop_token_ids)
        recorder = _TokenLogprobs(spec.temperature)
        sampled = self.model.generate(
            input_ids=input_ids,
            **forward_inputs(self.model, input_ids.cpu(), media, device),
            attention_mask=mask,
            # Neutral settings here, so generate adds no processor of its own: the list below is the whole
            # sampling distribution, as in _decode.
            logits_processor=LogitsProcessorList([recorder, *self._warpers(spec)]),
            do_sample=not spec.greedy, temperature=1.0, top_p=1.0, top_k=0,
            max_new_tokens=spec.max_new_tokens,
            num_return_sequences=spec.n,
            eos_token_id=list(stop) or None,
            pad_token_id=pad,
        )
        logprobs = recorder.finish(sampled)
        completions = []
        for row, tokens in enumerate(sampled[:, width:].tolist()):
            end = next((i + 1 for i, t in enumerate(tokens) if t in stop), None)
            tokens = tokens[:end] if end is not None else tokens
            # Rows that stopped early are padded after their end; their log-probs there are cut off here.
            completions.append(Completion(prompt_index=-1, token_ids=tokens,
                                          logprobs=logprobs[row, : len(tokens)].tolist(), finished=end is not None))
        return completions

    def sleep(self) -> None:
        """Nothing to free: the HF engine keeps no cache between calls."""

    def wake_up(self) -> None:
        pass

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Some or all of the weights (a sync sends them a bucket at a time), copied in place."""
        unexpected = self.model.load_state_dict(state_dict, strict=False).unexpected_keys
        if unexpected:
            raise KeyError(f"weights this model does not have: {unexpected[:5]}")

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}


class _TokenLogprobs(LogitsProcessor):
    """Keeps the log-prob, under logits / temperature (the distribution the actor trains on, before
    top-k/top-p), of the token sampled from the step before: no second forward pass over the sequences.
    It sees each step's raw logits only when it runs first: `generate` puts its own processors ahead of a
    given list, so the engine leaves it none (a blank generation config, neutral sampling settings)."""

    def __init__(self, temperature: float):
        self.temperature = temperature if temperature > 0 else 1.0
        self.previous: torch.Tensor | None = None
        self.kept: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._keep(input_ids[:, -1])
        self.previous = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def _keep(self, tokens: torch.Tensor) -> None:
        if self.previous is not None:
            self.kept.append(self.previous.gather(-1, tokens[:, None])[:, 0])

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """[rows, new tokens] log-probs, given generate's output."""
        self._keep(sequences[:, -1])
        return torch.stack(self.kept, dim=1)
