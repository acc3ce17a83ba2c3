"""The memory plan `--check` prints: the expected memory of each role on each GPU, and whether it fits.

From the model's config.json and the run's config it adds up, per worker, the weights, gradients and AdamW
state as each strategy keeps them (actor.strategy, actor.zero_stage, reshard, offload, dtypes), the
activations one micro-batch keeps for backward, the LM head's logits, and vLLM's KV cache budget; then
compares each GPU's sum with `resources.gpu_memory_gib`, keeping 10% free. Main assumptions: every row of
a micro-batch is as long as the longest allowed (prompt + response); attention is a fused kernel, so
nothing grows with the square of the sequence length; activations and logits are counted tensor by tensor
as autograd saves them, checked against measured peaks on CPU in float32 for SmolLM2 (bench/bench_memory.py:
0.8-1.1x) and carried to bfloat16 by the same count, not measured there; allocator fragmentation, the CUDA
context and communication buffers are left to the margin.
It is an estimate to plan with, not a promise: it says which knob to turn before a job waits for 8 GPUs.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trainer.config import Config

GIB = 1 << 30
BUNDLED_CONFIGS = Path(__file__).parent / "model_configs"
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
FREE_FRACTION = 0.10  # kept free on every GPU: fragmentation, CUDA context, NCCL buffers
ASSUMED_PROMPT_TOKENS = 1024  # when data.max_prompt_tokens is unset and no prompt was measured
PROMPTS_MEASURED = 1000  # prompts --check tokenizes to size the plan's rows
# Activation and logit constants, checked against measured peaks (bench/bench_memory.py, bench/RESULTS.md).
ACTIVATION_SCALE = 1.0  # measured / counted saved tensors of the decoder layers (0.9-1.1 on SmolLM2: no change)
CHUNK_F32_COPIES = 4  # float32 [chunk, vocab] tensors alive at once in the chunked head's backward
PLAIN_F32_COPIES = 2  # float32 [response, vocab] tensors the plain head adds: the softmax and one gradient
NO_GRAD_F32_COPIES = 2  # float32 [chunk, vocab] tensors of a log-prob pass without autograd
VLLM_RUNTIME_GIB = 2.0  # vLLM's own memory beside weights and KV: profiling activations, CUDA graphs, sampler
FEW_SEQUENCES = 8  # fewer full-length sequences than this in vLLM's KV cache: suggest more tensor parallelism
VLLM_ASLEEP_GIB = 1.0  # what a sleeping vLLM engine keeps on its GPU (level 1: weights to CPU, KV freed)


# ----- the model's shape ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, from a Hugging Face config.json; parameter counts as transformers builds them."""

    name: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    qk_norm: bool  # Qwen3: RMSNorm on each head's queries and keys
    context: int | None
    embedding_params: int
    layer_params: int  # one decoder layer
    head_params: int  # the LM head; 0 when tied to the embedding
    vision_params: int  # a vision tower, counted roughly; 0 for text models

    @property
    def params(self) -> int:
        return (self.embedding_params + self.layers * self.layer_params + self.hidden  # + the final norm
                + self.head_params + self.vision_params)


def model_shape(config: dict, name: str = "model") -> ModelShape:
    """The shape of a Llama / Qwen2 / Qwen3 (or a vision-language model's text part, under `text_config`)."""
    text = config.get("text_config") or config.get("llm_config") or config

    def get(key, default=None):
        # Older vision-language configs keep some text keys (vocab_size, tie_word_embeddings) at the top.
        return text.get(key, config.get(key, default))

    hidden, heads = int(get("hidden_size")), int(get("num_attention_heads"))
    kv_heads = int(get("num_key_value_heads") or heads)
    head_dim = int(get("head_dim") or hidden // heads)
    inter, vocab, layers = int(get("intermediate_size")), int(get("vocab_size")), int(get("num_hidden_layers"))
    model_type = str(text.get("model_type") or config.get("model_type") or "")
    # Qwen2 always puts a bias on q, k and v (not o); Llama and Qwen3 follow attention_bias (q, k, v and o).
    qkv_bias = model_type.startswith("qwen2") or bool(get("attention_bias", False))
    o_bias = not model_type.startswith("qwen2") and bool(get("attention_bias", False))
    qk_norm = model_type.startswith("qwen3")
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    attention = hidden * (q_dim + 2 * kv_dim) + q_dim * hidden
    attention += (q_dim + 2 * kv_dim) * qkv_bias + hidden * o_bias + 2 * head_dim * qk_norm
    mlp = 3 * hidden * inter + (2 * inter + hidden) * bool(get("mlp_bias", False))
    tied = bool(get("tie_word_embeddings", False))
    context = get("max_position_embeddings")
    return ModelShape(
        name=name, vocab=vocab, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        intermediate=inter, tied=tied, qk_norm=qk_norm, context=int(context) if context else None,
        embedding_params=vocab * hidden, layer_params=attention + mlp + 2 * hidden,
        head_params=0 if tied else vocab * hidden, vision_params=_vision_params(config.get("vision_config")),
    )


def _vision_params(vision: dict | None) -> int:
    """A vision tower, roughly (within a few percent for Qwen2-VL's): patch embedding, blocks of attention and
    a two-matrix MLP, and a patch merger when a merge size is given. Its activations are not planned."""
    if not vision:
        return 0
    width = int(vision.get("embed_dim") or vision.get("hidden_size") or 0)
    depth = int(vision.get("depth") or vision.get("num_hidden_layers") or 0)
    inter = int(vision.get("intermediate_size") or width * vision.get("mlp_ratio", 4))
    channels, patch = int(vision.get("in_channels", vision.get("num_channels", 3))), int(vision.get("patch_size", 14))
    patch_embed = channels * int(vision.get("temporal_patch_size", 1)) * patch * patch * width
    blocks = depth * (4 * width * width + 2 * width * inter)
    merge = int(vision.get("spatial_merge_size", 0))
    out = int(vision.get("out_hidden_size") or vision.get("hidden_size") or width)
    merger = (merge * merge * width) ** 2 + merge * merge * width * out if merge else 0
    return patch_embed + blocks + merger


# ----- where the config comes from ------------------------------------------------------------------

def tiny_config(cfg: Config, vocab_size: int) -> dict:
    """The config the embedded tiny models are built with (trainer/tiny_model.py)."""
    tiny = cfg.model.tiny
    text = {"model_type": "qwen2", "vocab_size": vocab_size, "hidden_size": tiny.hidden_size,
            "intermediate_size": tiny.intermediate_size, "num_hidden_layers": tiny.num_hidden_layers,
            "num_attention_heads": tiny.num_attention_heads, "num_key_value_heads": tiny.num_key_value_heads,
            "max_position_embeddings": tiny.max_position_embeddings, "tie_word_embeddings": True}
    if cfg.model.path != "tiny_vl":
        return text
    vision = cfg.model.tiny_vision
    return {"model_type": "qwen2_vl", "tie_word_embeddings": True, "text_config": text,
            "vision_config": {"depth": vision.depth, "embed_dim": vision.embed_dim, "mlp_ratio": vision.mlp_ratio,
                              "hidden_size": tiny.hidden_size, "patch_size": 14, "spatial_merge_size": 2,
                              "temporal_patch_size": 2}}


def read_model_config(cfg: Config, model_dir: str | None, tokenizer=None) -> tuple[dict | None, str]:
    """(config.json as a dict, a line saying where it came from); (None, why) when there is none to read.
    Order: the embedded tiny models' own settings, the model folder, the copy bundled for the recipes' models."""
    path = cfg.model.path
    if path in ("tiny", "tiny_vl"):
        if tokenizer is None or cfg.model.tokenizer:  # the tiny models' vocabulary is their own tokenizer's
            from trainer.tiny_model import build_tokenizer, build_vl_tokenizer

            tokenizer = build_vl_tokenizer() if path == "tiny_vl" else build_tokenizer()
        return tiny_config(cfg, len(tokenizer)), f"config of the embedded {path} model (model.tiny)"
    if model_dir is not None and (Path(model_dir) / "config.json").is_file():
        return json.loads((Path(model_dir) / "config.json").read_text()), f"config from {model_dir}/config.json"
    bundled = BUNDLED_CONFIGS / f"{path.replace('/', '__')}.json"
    if bundled.is_file():
        return json.loads(bundled.read_text()), f"config from the bundled copy of {path}'s config.json"
    return None, f"memory plan: not computed, it needs the model's config.json ({path} not found here)"


# ----- the plan -------------------------------------------------------------------------------------

@dataclass
class Part:
    kind: str  # weights, gradients, optimiser, gathered, activations, logits, kv_cache, runtime
    name: str  # what the table shows
    nbytes: float
    host: bool = False  # offloaded to host memory (actor.cpu_offload)


@dataclass
class RolePlan:
    role: str  # actor, rollout, reference
    label: str  # e.g. "actor 4 x 1 GPU"
    on_gpu: bool
    parts: list[Part]
    sharing: int = 1  # workers of this role on one GPU (fractional num_gpus)
    notes: list[str] = field(default_factory=list)
    cannot_start: str = ""  # a reason the role fails whatever the memory left (vLLM's KV cache too small)
    engine: str = ""  # the rollout's engine (vllm sleeps when colocated, hf does not)
    fit_note: str = ""  # said after "fits" (how many sequences vLLM's KV cache holds)

    @property
    def device_bytes(self) -> float:
        return sum(p.nbytes for p in self.parts if not p.host)

    @property
    def host_bytes(self) -> float:
        return sum(p.nbytes for p in self.parts if p.host)

    def bytes_of(self, *kinds: str) -> float:
        return sum(p.nbytes for p in self.parts if p.kind in kinds and not p.host)


@dataclass
class MemoryPlan:
    header: list[str]
    roles: list[RolePlan]
    gpu_bytes: float
    colocated: list[tuple[str, float]]  # (phase, bytes on the shared GPU) when roles share one
    verdicts: list[str]
    fits: bool

    def role(self, name: str) -> RolePlan | None:
        return next((r for r in self.roles if r.role == name), None)


@dataclass(frozen=True)
class Lengths:
    """Token counts the plan sizes for: one row of a training micro-batch, and of a vLLM sequence."""

    prompt: int
    response: int  # rollout.max_new_tokens: what training rows carry
    engine_response: int  # the longer of max_new_tokens and eval_max_new_tokens: what vLLM is sized for
    note: str

    @property
    def row(self) -> int:
        return self.prompt + self.response

    @property
    def engine_row(self) -> int:
        return self.prompt + self.engine_response


def sequence_lengths(cfg: Config, shape: ModelShape, measured: tuple[int, int] | None = None) -> Lengths:
    """Prompt tokens: data.max_prompt_tokens, else the longest prompt `measured` (tokens, prompts read),
    else ASSUMED_PROMPT_TOKENS within the model's context."""
    rollout = cfg.rollout
    engine_response = max(rollout.max_new_tokens, rollout.eval_max_new_tokens)
    if cfg.data.max_prompt_tokens:
        prompt, note = cfg.data.max_prompt_tokens, "data.max_prompt_tokens"
    elif measured:
        prompt, note = measured[0], f"the longest of {measured[1]} prompts read; data.max_prompt_tokens unset"
    else:
        admitted = shape.context - engine_response if shape.context else None
        prompt = min(ASSUMED_PROMPT_TOKENS, admitted) if admitted and admitted > 0 else ASSUMED_PROMPT_TOKENS
        note = (f"assumed: data.max_prompt_tokens unset, the trainer admits up to {admitted}"
                if admitted and admitted > prompt else "the model's context minus the response")
    # Later turns of a dialogue carry the earlier turns and the simulator's replies in their prompt (loop.py).
    turns = rollout.multiturn.turns - 1
    if turns > 0:
        prompt += turns * (rollout.max_new_tokens + rollout.multiturn.simulator_max_tokens + 8)
        note += f"; + {turns} earlier turn(s)"
    return Lengths(prompt, rollout.max_new_tokens, engine_response, note)


def plan_memory(cfg: Config, shape: ModelShape, *, measured: tuple[int, int] | None = None,
                suggest: bool = True) -> MemoryPlan:
    """Per-GPU (or, for CPU workers, per-process host) memory of each role, and whether each fits.
    `measured`: (tokens, prompts) of the longest prompt read, for rows when data.max_prompt_tokens is unset."""
    lengths = sequence_lengths(cfg, shape, measured)
    res = cfg.resources
    roles = [_actor(cfg, shape, lengths), _rollout(cfg, shape, lengths)]
    if cfg.algorithm.kl_coef > 0:
        roles.append(_reference(cfg, shape, lengths))
    gpu = res.gpu_memory_gib * GIB
    any_gpu = any(r.on_gpu for r in roles)
    unit = (f"GiB per GPU, {_gib(gpu)} GiB GPUs, 10% kept free" if any_gpu
            else "CPU workers: host memory per worker, GiB")
    header = [
        f"memory plan ({unit}):",
        f"  {shape.name}: {_count(shape.params)} parameters (embedding {_count(shape.embedding_params)}, "
        f"{shape.layers} layers x {_count(shape.layer_params)}, "
        + ("head tied" if shape.tied else f"head {_count(shape.head_params)}")
        + (f", vision ~{_count(shape.vision_params)}" if shape.vision_params else "")
        + f"), model.dtype {cfg.model.dtype}",
        f"  rows of {lengths.prompt} prompt ({lengths.note}) + {lengths.response} response tokens",
    ]
    colocated = _colocated_phases(cfg, roles) if res.placement == "colocate" else []
    verdicts, fits = _verdicts(cfg, shape, roles, colocated, gpu, measured, suggest)
    return MemoryPlan(header, roles, gpu, colocated, verdicts, fits)


def _on_gpu(role_resources) -> bool:
    return role_resources.num_gpus > 0


def _sharing(role_resources, placement: str) -> int:
    """Workers of one role on one GPU: fractional num_gpus pack several (split placement)."""
    gpus = role_resources.num_gpus
    if placement == "colocate" or gpus <= 0 or gpus >= 1:
        return 1
    return max(1, min(role_resources.count, math.floor(1 / gpus + 1e-9)))


def _compute_bytes(cfg: Config, on_gpu: bool) -> int:
    """Bytes per value of activations: bf16 under the sharded strategies' mixed precision (GPU only)."""
    if cfg.actor.mixed_precision and on_gpu and cfg.actor.strategy != "torch":
        return 2
    return DTYPE_BYTES[cfg.model.dtype]


def micro_batch(cfg: Config, lengths: Lengths, ranks: int) -> tuple[int, int]:
    """(rows, tokens) of the largest micro-batch a rank runs: micro_batch_size rows of its share of a
    mini-batch, or as many rows as fit max_tokens_per_micro_batch (a longer row goes alone)."""
    actor = cfg.actor
    if actor.max_tokens_per_micro_batch:
        rows = max(1, actor.max_tokens_per_micro_batch // lengths.row)
    else:
        rows = min(actor.micro_batch_size, -(-actor.mini_batch_size // ranks))
    return rows, rows * lengths.row


def layer_activation_bytes(shape: ModelShape, compute_bytes: int) -> int:
    """Bytes one token keeps for backward in one decoder layer (what autograd saves, as transformers' Llama /
    Qwen layers run): two RMSNorms (a float32 upcast, the normalised and the scaled copy), the rotated
    queries and keys, values, attention output and o_proj input, and the MLP's gate, up, act(gate) and
    act(gate) * up. With a fused attention kernel nothing here grows with the sequence length."""
    b = compute_bytes
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    norms = 2 * (4 + 2 * b) * shape.hidden
    attention = (3 * q + 2 * kv) * b + ((4 + 2 * b) * (q + kv) if shape.qk_norm else 0)
    mlp = 4 * shape.intermediate * b
    return norms + attention + mlp


def activation_bytes(shape: ModelShape, tokens: int, compute_bytes: int, checkpointing: bool) -> float:
    """A micro-batch's activations at the peak of backward: what forward keeps (every layer's saved tensors,
    or with gradient checkpointing each layer's input and the one layer being recomputed), plus the final
    norm and one layer's worth of gradients flowing back."""
    per_layer = layer_activation_bytes(shape, compute_bytes)
    if checkpointing:
        kept = shape.layers * shape.hidden * compute_bytes + per_layer
    else:
        kept = shape.layers * per_layer
    final_norm = (4 + 2 * compute_bytes) * shape.hidden
    return ACTIVATION_SCALE * tokens * (kept + final_norm + per_layer)


def logit_bytes(shape: ModelShape, tokens: int, response_tokens: int, chunk: int, compute_bytes: int, *,
                grad: bool = True) -> float:
    """The LM head's logits as trainer/modeling.py response_logprobs makes them. Chunked (chunk > 0): one
    [chunk, vocab] block at a time, float32, recomputed in backward: a few float32 copies of it (logits over
    the temperature, softmax, their gradients) and the head's own output in the compute dtype. Plain (0): the
    model's [rows, length, vocab] logits in the compute dtype, the response positions gathered and scaled,
    the softmax and one gradient of that size; in bf16 also the float32 copies log-softmax and entropy make.
    With autograd, the head's [vocab, hidden] weight gradient too, made before it is added to .grad."""
    vocab, b = shape.vocab, compute_bytes
    low = b if b < 4 else 0  # a bf16 block beside its float32 copy (on float32, .float() is the same tensor)
    head_grad = vocab * shape.hidden * b if grad else 0
    if chunk > 0:
        rows = min(chunk, max(response_tokens, 1))
        return rows * vocab * ((CHUNK_F32_COPIES if grad else NO_GRAD_F32_COPIES) * 4 + low) + head_grad
    per_response = b + (PLAIN_F32_COPIES if grad else 1) * 4 + (2 * 4 if low else 0)
    return tokens * vocab * b + response_tokens * vocab * per_response + head_grad


def _actor(cfg: Config, shape: ModelShape, lengths: Lengths) -> RolePlan:
    actor, res = cfg.actor, cfg.resources.actor
    on_gpu = _on_gpu(res)
    ranks = res.count if actor.strategy != "torch" else 1
    parts = _actor_states(cfg, shape, on_gpu, ranks)
    b = _compute_bytes(cfg, on_gpu)
    rows, tokens = micro_batch(cfg, lengths, ranks)
    act = activation_bytes(shape, tokens, b, actor.gradient_checkpointing)
    how = "checkpointed" if actor.gradient_checkpointing else "not checkpointed"
    parts.append(Part("activations", f"activations: {rows} x {lengths.row} tokens, {how}", act))
    chunk = actor.logits_chunk_size or 0
    logits = logit_bytes(shape, tokens, rows * lengths.response, chunk, b)
    size = f"chunk {min(chunk, rows * lengths.response)}" if chunk else f"plain, {tokens} positions"
    parts.append(Part("logits", f"logits: {size} x {shape.vocab} vocab", logits))
    where = f"{res.num_gpus:g} GPU" if on_gpu else "CPU"
    name = actor.strategy + (f" ZeRO-{actor.zero_stage}" if actor.strategy == "deepspeed" else "")
    return RolePlan("actor", f"actor {res.count} x {where}, {name}", on_gpu, parts,
                    _sharing(res, cfg.resources.placement))


def lora_params(shape: ModelShape, rank: int, targets: list[str]) -> int:
    """Parameters of the LoRA adapters actor.lora adds: rank x (inputs + outputs) per adapted linear layer."""
    attention, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    sizes = {"q_proj": (shape.hidden, attention), "k_proj": (shape.hidden, kv), "v_proj": (shape.hidden, kv),
             "o_proj": (attention, shape.hidden), "gate_proj": (shape.hidden, shape.intermediate),
             "up_proj": (shape.hidden, shape.intermediate), "down_proj": (shape.intermediate, shape.hidden)}
    return shape.layers * sum(rank * sum(sizes[t]) for t in targets if t in sizes)


def _actor_states(cfg: Config, shape: ModelShape, on_gpu: bool, ranks: int) -> list[Part]:
    """Weights, gradients and optimiser state of one rank. torch and fsdp2 keep all three in the parameters'
    dtype (model.dtype: AdamW's moments take it too, no float32 master copy); DeepSpeed's ZeRO optimiser keeps
    a float32 master copy, float32 moments and float32 gradients of its partition, whatever model.dtype."""
    actor = cfg.actor
    p = shape.params
    trainable = p - (shape.vision_params if actor.freeze_vision else 0)
    lora = f" + LoRA rank {actor.lora.rank} adapters" if actor.lora.rank else ""
    if lora:  # the adapters join the weights and are all that trains (gradients, optimiser state)
        trainable = lora_params(shape, actor.lora.rank, list(actor.lora.target_modules))
        p += trainable
    wb, b = DTYPE_BYTES[cfg.model.dtype], _compute_bytes(cfg, on_gpu)
    offload = actor.cpu_offload and on_gpu and actor.strategy != "torch"
    one_layer = shape.layer_params
    # What a sharded strategy gathers to compute: the root unit (embedding, head) and a layer plus the next
    # one prefetched, and one layer's unsharded gradients before they are reduce-scattered.
    gathered = (shape.embedding_params + shape.head_params + 2 * one_layer) * b + one_layer * b
    if actor.strategy == "torch":
        return [Part("weights", "weights" + lora, p * wb),
                Part("gradients", "gradients" + (": adapters only" if lora else ""), trainable * wb),
                Part("optimiser", f"optimiser: AdamW m, v{' of the adapters' if lora else ''} in {cfg.model.dtype}",
                     2 * trainable * wb)]
    n = ranks
    if actor.strategy == "fsdp2":
        parts = [Part("weights", f"weights{lora}: shard 1/{n}", p * wb / n, host=offload),
                 Part("gradients", f"gradients: shard 1/{n}", trainable * wb / n, host=offload),
                 Part("optimiser", f"optimiser: AdamW m, v, shard 1/{n}", 2 * trainable * wb / n, host=offload)]
        if actor.reshard_after_forward:
            parts.append(Part("gathered", "gathered: embedding, head, 2 layers", gathered))
        else:  # every layer stays gathered from its forward to its backward
            parts.append(Part("gathered", "gathered: all layers (no reshard)", p * b + one_layer * b))
        return parts
    stage = actor.zero_stage
    # ZeRO-1 shards the optimiser, ZeRO-2 also the gradients, ZeRO-3 also the weights.
    weights = Part("weights", "weights" + lora + (f": shard 1/{n}" if stage == 3 else ""),
                   p * b / (n if stage == 3 else 1), host=offload and stage == 3)
    grads = Part("gradients", "gradients" + (f": shard 1/{n}" if stage >= 2 else ""),
                 trainable * b / (n if stage >= 2 else 1))
    parts = [weights, grads,
             Part("optimiser", f"optimiser: fp32 master, m, v, grads 1/{n}", 16 * trainable / n, host=offload)]
    if stage == 3:
        parts.append(Part("gathered", "gathered: embedding, head, 2 layers", gathered))
    return parts


def _rollout(cfg: Config, shape: ModelShape, lengths: Lengths) -> RolePlan:
    rollout, res = cfg.rollout, cfg.resources.rollout
    on_gpu = _on_gpu(res)
    wb = DTYPE_BYTES[cfg.model.dtype]
    tp = rollout.tensor_parallel_size
    # Each shard holds its share of the KV heads (all of them once tp passes their count).
    kv_token = 2 * shape.layers * math.ceil(shape.kv_heads / tp) * shape.head_dim * wb
    weights = shape.params * wb / tp
    engine = _engine(cfg, shape, on_gpu)
    where = f"{res.num_gpus:g} GPU" if on_gpu else "CPU"
    label = f"rollout {res.count} x {where}, {engine}" + (f" tp {tp}" if tp > 1 else "")
    sharing = _sharing(res, cfg.resources.placement)
    if engine == "hf":  # the HF engine decodes the whole batch with its own growing cache
        modes = max(1, len(rollout.modes))
        rows = cfg.data.prompts_per_step * rollout.n * modes // res.count
        kv = rows * lengths.engine_row * kv_token
        parts = [Part("weights", "weights", weights), Part("kv_cache", f"KV cache: {rows} rows", kv)]
        return RolePlan("rollout", label, on_gpu, parts, sharing, engine=engine)
    if not on_gpu:
        kv = rollout.kv_cache_gib * GIB
        notes = [f"KV cache holds {kv // kv_token:,.0f} tokens"]
        parts = [Part("weights", "weights", weights), Part("kv_cache", "KV cache (rollout.kv_cache_gib)", kv)]
        if tp == 1:  # linear weights are kept beside their packed copy for in-place syncs (vllm_engine.py)
            kept = (shape.layers * shape.layer_params + shape.vision_params) * wb
            parts.insert(1, Part("weights_kept", "linear weights kept for in-place syncs", kept))
        return RolePlan("rollout", label, on_gpu, parts, sharing, notes, engine=engine)
    budget = rollout.gpu_memory_utilization * cfg.resources.gpu_memory_gib * GIB
    runtime = VLLM_RUNTIME_GIB * GIB
    kv = budget - weights - runtime
    tokens = max(0, int(kv // kv_token))
    parts = [Part("weights", f"weights: {'shard 1/' + str(tp) + ', ' if tp > 1 else ''}{cfg.model.dtype}", weights),
             Part("runtime", "vLLM runtime (activations, graphs)", runtime),
             Part("kv_cache", f"KV cache: {rollout.gpu_memory_utilization:g} x GPU - the rest", max(kv, 0.0))]
    wanted = rollout.max_num_seqs * lengths.engine_row
    at_once = f"{tokens // lengths.engine_row} sequences of {lengths.engine_row} at once"
    notes = [f"KV cache: {tokens:,} tokens = {at_once} (max_num_seqs {rollout.max_num_seqs}: {wanted:,})"]
    fit_note = f"KV cache for {at_once}"
    if tokens < FEW_SEQUENCES * lengths.engine_row:
        fit_note += (f"; few for a batch: rollout.tensor_parallel_size={2 * tp} "
                     f"resources.rollout.num_gpus={2 * tp} holds more")
    plan = RolePlan("rollout", label, on_gpu, parts, sharing, notes, engine=engine, fit_note=fit_note)
    if tokens < lengths.engine_row:
        plan.cannot_start = (f"KV cache {_gib(max(kv, 0))} GiB holds {tokens:,} tokens < one sequence of "
                             f"{lengths.engine_row}: vLLM refuses to start")
    return plan


def _engine(cfg: Config, shape: ModelShape, on_gpu: bool) -> str:
    from trainer.rollout import HF_ENGINE_BELOW_PARAMS

    engine = cfg.rollout.engine
    if engine != "auto":
        return engine
    small = shape.params < HF_ENGINE_BELOW_PARAMS and not on_gpu and cfg.rollout.tensor_parallel_size == 1
    return "hf" if small else "vllm"


def _reference(cfg: Config, shape: ModelShape, lengths: Lengths) -> RolePlan:
    res = cfg.resources.reference
    on_gpu = _on_gpu(res)
    wb = DTYPE_BYTES[cfg.model.dtype]
    rows, tokens = micro_batch(cfg, lengths, 1)
    # Without autograd only the layer being computed is alive: about one layer's activations.
    act = ACTIVATION_SCALE * tokens * layer_activation_bytes(shape, wb)
    chunk = cfg.actor.logits_chunk_size or 0
    logits = logit_bytes(shape, tokens, rows * lengths.response, chunk, wb, grad=False)
    parts = [Part("weights", f"weights: {cfg.model.dtype}, unsharded", shape.params * wb),
             Part("activations", f"forward: {rows} x {lengths.row} tokens, no grad", act),
             Part("logits", "logits, no grad", logits)]
    label = f"reference {res.count} x {f'{res.num_gpus:g} GPU' if on_gpu else 'CPU'}"
    return RolePlan("reference", label, on_gpu, parts, _sharing(res, cfg.resources.placement))


def _colocated_phases(cfg: Config, roles: list[RolePlan]) -> list[tuple[str, float]]:
    """Sums on a GPU that actor rank i, rollout engine i and reference i share (resources.placement=colocate,
    their num_gpus adding up to at most 1). Colocated vLLM sleeps while the actor trains (cluster.py
    rollout_sleeps): generation holds the actor at rest (weights and optimiser state) beside the awake engine;
    training holds the actor's peak beside the asleep engine and the reference (its log-probs counted at
    their peak, as if beside the update)."""
    res = cfg.resources
    shared = [r for r in roles if r.on_gpu]
    if len(shared) < 2 or sum(getattr(res, r.role).num_gpus for r in shared) > 1 + 1e-9:
        return []
    actor = next(r for r in roles if r.role == "actor")
    rollout = next(r for r in roles if r.role == "rollout")
    reference = next((r for r in shared if r.role == "reference"), None)
    resident = actor.bytes_of("weights", "optimiser")  # gradients are freed after each optimiser step
    ref_weights = reference.bytes_of("weights") if reference else 0.0
    ref_peak = reference.device_bytes if reference else 0.0
    # The HF engine has no sleep mode: it keeps its weights and cache.
    asleep = VLLM_ASLEEP_GIB * GIB if rollout.engine == "vllm" else rollout.device_bytes
    ref = " + reference" if reference else ""
    return [("generation: actor at rest + rollout awake" + ref, resident + rollout.device_bytes + ref_weights),
            ("training: actor peak + rollout asleep" + ref, actor.device_bytes + asleep + ref_peak)]


# ----- verdicts and suggestions ---------------------------------------------------------------------

def _verdicts(cfg: Config, shape: ModelShape, roles: list[RolePlan], colocated: list[tuple[str, float]],
              gpu: float, measured: tuple[int, int] | None, suggest: bool) -> tuple[list[str], bool]:
    """One line per role ("fits" / "does NOT fit ...; try ..."), one per colocated phase; and whether all fit."""
    usable = gpu * (1 - FREE_FRACTION)
    lines = [_role_verdict(cfg, shape, role, gpu, measured, suggest) for role in roles]
    for phase, total in colocated:
        name = phase.split(":")[0]
        if total > usable:
            lines.append(f"shared GPU, {name}: does NOT fit: {_gib(total)} GiB > {_gib(usable)} GiB; try a lower "
                         "rollout.gpu_memory_utilization, actor.cpu_offload=true or resources.placement=split")
        else:
            lines.append(f"shared GPU, {name}: fits: {_gib(total)} of {_gib(usable)} GiB")
    if not any(r.on_gpu for r in roles):
        lines.append(_host_line(cfg, roles))
    return lines, not any("does NOT fit" in line for line in lines)


def _role_verdict(cfg: Config, shape: ModelShape, role: RolePlan, gpu: float, measured: tuple[int, int] | None,
                  suggest: bool) -> str:
    usable = gpu * (1 - FREE_FRACTION)
    if not role.on_gpu:
        return f"{role.role}: {_gib(role.device_bytes)} GiB of host memory per worker (no GPU declared)"
    total = role.device_bytes * role.sharing
    shared = f" ({role.sharing} workers per GPU)" if role.sharing > 1 else ""
    if role.cannot_start:
        hint = _rollout_hints(cfg, shape, measured) if suggest else ""
        return f"{role.role}: does NOT fit: {role.cannot_start}" + (f"; try {hint}" if hint else "")
    if role.engine == "vllm":  # its budget is a share of the GPU, taken whole at start
        if total > gpu:
            return (f"rollout: does NOT fit: {role.sharing} engines x rollout.gpu_memory_utilization="
                    f"{cfg.rollout.gpu_memory_utilization:g} > the whole GPU; lower it")
        return (f"rollout: fits: {_gib(total)} GiB{shared} (gpu_memory_utilization "
                f"{cfg.rollout.gpu_memory_utilization:g}), {role.fit_note}")
    if total > usable:
        hint = _suggestions(cfg, shape, role.role, measured) if suggest and role.role != "rollout" else ""
        return (f"{role.role}: does NOT fit: {_gib(total)} GiB{shared} > {_gib(usable)} GiB"
                + (f"; try {hint}" if hint else ""))
    return f"{role.role}: fits: {_gib(total)} of {_gib(usable)} GiB{shared}"


def _host_line(cfg: Config, roles: list[RolePlan]) -> str:
    """CPU workers: every worker's host memory together, against this machine's."""
    total = sum(getattr(cfg.resources, r.role).count * (r.device_bytes + r.host_bytes) for r in roles)
    available = _host_memory()
    there = f"; this machine has {_gib(available)} GiB" if available else ""
    return f"all workers together: {_gib(total)} GiB of host memory{there}"


def _host_memory() -> float | None:
    try:
        line = next(row for row in Path("/proc/meminfo").read_text().splitlines() if row.startswith("MemTotal"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024


def _with(cfg: Config, **changes) -> Config:
    """A copy of `cfg` with dotted keys changed (`actor__micro_batch_size=4` style: __ for the dot)."""
    changed = copy.deepcopy(cfg)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        target = changed
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return changed


def _role_fits(cfg: Config, shape: ModelShape, role: str, measured: tuple[int, int] | None) -> bool:
    plan = plan_memory(cfg, shape, measured=measured, suggest=False)
    found = plan.role(role)
    return found is not None and found.device_bytes * found.sharing <= plan.gpu_bytes * (1 - FREE_FRACTION)


def _candidates(cfg: Config, shape: ModelShape, measured: tuple[int, int] | None) -> list[tuple[str, dict]]:
    """Single changes that lower the actor's (or reference's) memory, cheapest first (compute before GPUs,
    offload last): (what to type, change)."""
    actor, n = cfg.actor, cfg.resources.actor.count
    found = []
    if not actor.gradient_checkpointing:
        found.append(("actor.gradient_checkpointing=true", {"actor__gradient_checkpointing": True}))
    if not actor.logits_chunk_size:
        found.append(("actor.logits_chunk_size=1024", {"actor__logits_chunk_size": 1024}))
    if actor.strategy == "fsdp2" and not actor.reshard_after_forward:
        found.append(("actor.reshard_after_forward=true", {"actor__reshard_after_forward": True}))
    if actor.strategy == "deepspeed" and actor.zero_stage < 3:
        found.append(("actor.zero_stage=3", {"actor__zero_stage": 3}))
    rows, _ = micro_batch(cfg, sequence_lengths(cfg, shape, measured), n if actor.strategy != "torch" else 1)
    budget = " actor.max_tokens_per_micro_batch=null" if actor.max_tokens_per_micro_batch else ""
    for smaller in _smaller_micro_batches(actor.mini_batch_size, rows):
        found.append((f"actor.micro_batch_size={smaller}{budget}",
                      {"actor__micro_batch_size": smaller, "actor__max_tokens_per_micro_batch": None}))
    for ranks in (2 * n, 4 * n, 8 * n):
        if actor.strategy == "torch":
            found.append((f"actor.strategy=fsdp2 resources.actor.count={ranks}",
                          {"actor__strategy": "fsdp2", "resources__actor__count": ranks}))
        else:
            found.append((f"resources.actor.count={ranks}", {"resources__actor__count": ranks}))
    if actor.strategy != "torch" and not actor.cpu_offload:
        found.append(("actor.cpu_offload=true", {"actor__cpu_offload": True}))
    return found


def _smaller_micro_batches(mini_batch_size: int, rows: int) -> list[int]:
    """Micro-batch sizes below `rows` that divide the mini-batch, largest first, halving (at most four)."""
    sizes, size = [], rows // 2
    while size >= 1 and len(sizes) < 4:
        while mini_batch_size % size:
            size -= 1
        sizes.append(size)
        size //= 2
    return sizes


def _suggestions(cfg: Config, shape: ModelShape, role: str, measured: tuple[int, int] | None) -> str:
    """Up to three single changes that make `role` fit; else a combination that does: the candidates applied
    in order until it fits (a later value of the same keys replacing the earlier one), then each choice
    dropped or made smaller where it still fits."""
    candidates = _candidates(cfg, shape, measured)
    if role == "reference":  # unsharded: only its micro-batch and logits change it
        candidates = [c for c in candidates if "micro_batch" in c[0] or "logits" in c[0]]
    single: dict[tuple, str] = {}  # the first (smallest) change of each kind that fits
    for text, change in candidates:
        if tuple(change) not in single and _role_fits(_with(cfg, **change), shape, role, measured):
            single[tuple(change)] = text
    if single:
        return " or ".join(list(single.values())[:3])
    chosen: dict[tuple, tuple[str, dict]] = {}
    for text, change in candidates:
        chosen[tuple(change)] = (text, change)
        if _role_fits(_apply(cfg, chosen), shape, role, measured):
            pruned = _prune(cfg, shape, role, measured, candidates, chosen)
            return "all of: " + " ".join(text for text, _ in pruned.values())
    return "a larger GPU: even " + " ".join(text for text, _ in chosen.values()) + " does not fit"


def _apply(cfg: Config, chosen: dict) -> Config:
    for _, change in chosen.values():
        cfg = _with(cfg, **change)
    return cfg


def _prune(cfg: Config, shape: ModelShape, role: str, measured: tuple[int, int] | None, candidates: list,
           chosen: dict) -> dict:
    """Each choice dropped, or replaced by the smallest change of its keys, where the rest still fits."""
    for keys in list(chosen):
        for option in [None] + [c for c in candidates if tuple(c[1]) == keys]:
            trial = {k: v for k, v in chosen.items() if k != keys}
            if option is not None:
                trial[keys] = option
            if _role_fits(_apply(cfg, trial), shape, role, measured):
                chosen = trial
                break
    return chosen


def _rollout_hints(cfg: Config, shape: ModelShape, measured: tuple[int, int] | None) -> str:
    tp = cfg.rollout.tensor_parallel_size
    for larger in (2 * tp, 4 * tp, 8 * tp):
        trial = _with(cfg, rollout__tensor_parallel_size=larger, resources__rollout__num_gpus=larger)
        plan = plan_memory(trial, shape, measured=measured, suggest=False)
        if not plan.role("rollout").cannot_start:
            higher = "" if cfg.rollout.gpu_memory_utilization >= 0.85 else " or a higher rollout.gpu_memory_utilization"
            return f"rollout.tensor_parallel_size={larger} resources.rollout.num_gpus={larger}{higher}"
    return "a shorter rollout.max_new_tokens, or more GPUs per engine"


# ----- printing -------------------------------------------------------------------------------------

def _gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.1f}"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def format_plan(plan: MemoryPlan) -> list[str]:
    """A fixed-width table: one line per role and component (GiB), a total per role, then the verdicts."""
    unit = "GiB/GPU" if any(r.on_gpu for r in plan.roles) else "GiB"
    lines = list(plan.header)
    lines.append(f"  {'role':<30} {'component':<48} {unit:>7}")
    for role in plan.roles:
        label = role.label
        for part in role.parts:
            where = " host" if part.host else ""
            lines.append(f"  {label:<30} {part.name:<48} {_gib(part.nbytes):>7}{where}")
            label = ""
        lines.append(f"  {'':<30} {'total' + (' on GPU' if role.on_gpu else ''):<48} {_gib(role.device_bytes):>7}")
        if role.host_bytes:
            lines.append(f"  {'':<30} {'in host memory (actor.cpu_offload)':<48} {_gib(role.host_bytes):>7}")
        for note in role.notes:
            lines.append(f"  {'':<30} {note}")
    for phase, total in plan.colocated:
        lines.append(f"  {'shared GPU (colocate)':<30} {phase:<48.48} {_gib(total):>7}")
    lines += [f"  {verdict}" for verdict in plan.verdicts]
    return lines


def plan_lines(cfg: Config, model_dir: str | None = None, tokenizer=None, samples: list | None = None) -> list[str]:
    """The plan as `--check` prints it: where the config came from, then the table; one line when the
    model's config.json cannot be read. A staged recipe gets a table per RL stage, once per distinct plan.
    With `samples` and a tokenizer, rows are sized by the longest of their prompts (unless data.max_prompt_tokens)."""
    config, source = read_model_config(cfg, model_dir, tokenizer)
    if config is None:
        return [source]
    try:
        shape = model_shape(config, cfg.model.path)
    except (KeyError, TypeError, ValueError) as error:
        return [f"memory plan: not computed, the model's config.json lacks a field ({type(error).__name__}: {error})"]
    lines = [f"memory plan: {source}"]
    measured = longest_prompt(cfg, samples, tokenizer, model_dir)
    seen: dict[str, str] = {}
    for label, stage in _rl_configs(cfg):
        table = format_plan(plan_memory(stage, shape, measured=measured))
        key = "\n".join(table)
        if key in seen:
            lines.append(f"memory plan of {label}: as {seen[key]}")
            continue
        seen[key] = label or "above"
        if label:
            table[0] = table[0].replace("memory plan", f"memory plan, {label}", 1)
        lines += table
    return lines


def longest_prompt(cfg: Config, samples: list | None, tokenizer, model_dir: str | None) -> tuple[int, int] | None:
    """(tokens of the longest text prompt, prompts measured) among the first PROMPTS_MEASURED samples, rendered
    as rollout renders them; None without samples or tokenizer."""
    if not samples or tokenizer is None:
        return None
    from trainer.chat import ChatFormat

    try:
        chat = ChatFormat.from_config(tokenizer, model_dir, cfg.data)
        lengths = [len(chat.ids(s)) for s in samples[:PROMPTS_MEASURED] if not s.images]
    except Exception:  # noqa: BLE001 - a prompt that fails to render is --check's finding, reported there
        return None
    return (max(lengths), len(lengths)) if lengths else None


def _rl_configs(cfg: Config) -> list[tuple[str, Config]]:
    """("", cfg) for a single run; for a staged recipe each GRPO stage's composed config."""
    if not cfg.stages:
        return [("", cfg)]
    from trainer.stages.runner import StageConfigError, stage_config

    found = []
    for name, spec in cfg.stages.items():
        if not isinstance(spec, dict) or spec.get("type") != "grpo":
            continue
        try:
            stage = stage_config(cfg, name, spec, Path(cfg.trainer.output_dir) / "stages" / name, cfg.model.path, None)
        except StageConfigError:
            continue  # --check reports it
        found.append((f"stage {name}", stage))
    return found or [("", cfg)]


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer.memory_plan recipe=NAME [key=value ...]`: the plan alone, without the rest of
    `--check` (no data, no tokenizer). The model's config.json comes from a local folder, the Hugging Face
    cache (never downloaded) or the bundled copies of the recipes' models."""
    from trainer.recipe_config import ConfigError, compose_config

    try:
        cfg = compose_config(list(sys.argv[1:] if argv is None else argv))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in plan_lines(cfg, _cached_model_dir(cfg)):
        print(line)
    return 0


def _cached_model_dir(cfg: Config) -> str | None:
    """The model's folder when it is local or already in the Hugging Face cache (no network)."""
    path = cfg.model.path
    if path == "smollm2":
        from trainer.smollm2 import default_dir

        return str(default_dir())
    if Path(path).expanduser().is_dir():
        return str(Path(path).expanduser())
    if path in ("tiny", "tiny_vl"):
        return None
    from trainer.hub import ModelNotFoundError, resolve_model_path

    try:
        return resolve_model_path(path, cfg.model.revision, offline=True, allow_patterns=["config.json"])
    except ModelNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
