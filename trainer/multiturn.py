"""Multi-turn rollouts against a simulated user (Baichuan-M2's patient simulator).

Each of the n trajectories of a prompt alternates policy turns and simulator replies. The
simulator is any OpenAI-compatible chat endpoint (the judge client's transport), role-playing
the sample's case; `simulator_local_model` serves a local model on loopback instead. The whole
dialogue after the prompt is the "response": policy tokens are trained on (loss mask 1), the
simulator's tokens are context only (loss mask 0), and rewards score the full dialogue text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from data.schema import Sample
from rewards.judge import JudgeClient
from trainer.cluster import WorkerCluster
from trainer.config import MultiTurnConfig
from trainer.prompts import PromptRenderer
from trainer.rollout.sampling import Completion, SamplingSpec
from trainer.rollouts import Rollout, Rollouts


class PatientSimulator:
    def __init__(self, cfg: MultiTurnConfig, policy_path: str):
        self.cfg, self._stop = cfg, None
        url = cfg.simulator_url
        if url is None:
            from rewards.judge_server import serve_in_background

            local = policy_path if cfg.simulator_local_model == "policy" else cfg.simulator_local_model
            # Served under the name the client asks for (it used to answer 404 "not served here" to every turn).
            url, self._stop = serve_in_background(local, served_model_name=cfg.simulator_model)
        self.client = JudgeClient(
            url, cfg.simulator_model, api_key_env=cfg.simulator_api_key_env, max_tokens=cfg.simulator_max_tokens,
            timeout_s=cfg.simulator_timeout_s, temperature=0.0,
        )
        self.failures = 0

    def messages(self, sample: Sample, turns: list[str]) -> list[dict]:
        """The simulator's view: the case as system prompt, the policy's turns as the user speaking to it."""
        case = sample.field(self.cfg.case_field) or sample.prompt or ""
        messages = [{"role": "system", "content": self.cfg.instruction.format(case=case)}]
        for i, text in enumerate(turns):
            messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
        return messages

    def reply(self, samples: list[Sample], dialogues: list[list[str]]) -> list[str | None]:
        """The simulator's next turn per dialogue; None where the endpoint gave no reply after its retries."""
        answers = self.client.judge_many([self.messages(s, d) for s, d in zip(samples, dialogues)])
        self.failures += sum(a is None for a in answers)
        return answers

    def failure_reason(self) -> str:
        return f"patient simulator at {self.client.base_url} gave no reply ({self.client.last_error})"

    def close(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None


@dataclass
class _Trajectory:
    group: int
    context: list[int]
    tokens: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: list[str] = field(default_factory=list)
    finished: bool = True
    simulator_failed: bool = False

    def add(self, tokens: list[int], policy: bool, logprobs: list[float] | None = None) -> None:
        self.context += tokens
        self.tokens += tokens
        self.mask += [int(policy)] * len(tokens)
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(tokens)


def dialogues(prompts: PromptRenderer, workers: WorkerCluster, simulator: PatientSimulator,
              samples: list[Sample], spec: SamplingSpec) -> Rollouts:
    """n dialogues per prompt of `rollout.multiturn.turns` policy turns; returns unscored Rollouts. Every
    turn is generated with the prompt's images (the dialogue extends the same prompt)."""
    cfg, chat = simulator.cfg, prompts.chat
    clock = time.time()
    prompt_ids = [prompts.ids(s) for s in samples]
    media = prompts.media_of(samples)
    separator = prompts.text_ids(cfg.turn_separator)
    trajectories: list[_Trajectory] = []
    for turn in range(cfg.turns):
        if turn == 0:
            completions = workers.generate(prompt_ids, spec, media=media)
            trajectories = [_Trajectory(group=c.prompt_index, context=list(prompt_ids[c.prompt_index]))
                            for c in completions]
        else:
            replies = simulator.reply([samples[t.group] for t in trajectories], [t.turns for t in trajectories])
            for t, reply in zip(trajectories, replies):
                t.simulator_failed |= reply is None  # the dialogue goes on with an empty turn, counted below
                reply = reply or ""
                t.add(separator + prompts.text_ids(reply)[: cfg.simulator_max_tokens] + separator, policy=False)
                t.turns.append(reply)
            single = SamplingSpec(**{**spec.__dict__, "n": 1, "seed": spec.seed + 104_729 * turn})
            completions = workers.generate([t.context for t in trajectories], single,
                                           media=None if media is None else [media[t.group] for t in trajectories])
        for t, c in zip(trajectories, completions):
            tokens, logprobs = list(c.token_ids), list(c.logprobs)
            if turn < cfg.turns - 1 and tokens and tokens[-1] in chat.stop_ids:
                tokens, logprobs = tokens[:-1], logprobs[:-1]  # the dialogue goes on: no end-of-text yet
            t.add(tokens, policy=True, logprobs=logprobs)
            t.turns.append(chat.decode(c.token_ids))
            t.finished = c.finished
    out = Rollouts(samples=samples, media=media)
    for t in trajectories:
        completion = Completion(prompt_index=t.group, token_ids=t.tokens, logprobs=t.logprobs, finished=t.finished,
                                loss_mask=t.mask)
        text = chat.prefix_for(samples[t.group]) + chat.decode(t.tokens)
        out.items.append(Rollout(group=t.group, prompt_ids=prompt_ids[t.group], completion=completion, text=text))
    failed = sum(t.simulator_failed for t in trajectories)
    if failed:
        out.failures["simulator/error"] = failed
        out.failure_reasons["simulator/error"] = simulator.failure_reason()
    out.seconds["generate"] = time.time() - clock
    return out
