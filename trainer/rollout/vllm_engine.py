"""vLLM rollout engine (the CPU build on CPU, CUDA vLLM on GPU).

vLLM runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) so new weights are
handed over as tensors, with no disk round trip and no engine restart: on GPU with
`reload_weights`, on CPU copied in place (`_keep_cpu_linear_weights`). Tokenisation
stays with the caller (`skip_tokenizer_init`), so prompts and responses are token
ids on both engines.

With `tensor_parallel_size > 1` vLLM shards the model over that many worker
processes of its own (the `mp` executor, inside this worker's GPUs or cores).
New weights then travel once through a safetensors file in shared memory
(/dev/shm) that every shard reads its slice of.

Vision-language models (Qwen2-VL family) run on vLLM's Transformers backend: vLLM's own Qwen2-VL
imports transformers' torchvision image processor, and no CPU torchvision build is installable
here. The backend patches transformers' model classes in its process, so the engine must have a
process of its own (a Ray rollout actor). Prompts go in with each image placeholder run collapsed
to one token and vLLM expands it again with the model folder's processor; the expanded ids must
equal the trainer's, or the sample is named in an error.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

import torch

from trainer.rollout.sampling import Completion, SamplingSpec

# vLLM model types whose weights the CPU engine syncs in place (the dense decoders and the Qwen-VL models
# run on vLLM's Transformers backend): their layers need nothing after loading but a repack.
IN_PLACE_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "qwen2_vl", "qwen2_5_vl")
# generate_stream hands a call's completions back in about this many parts as prompts finish.
STREAM_PARTS = 8


class _DropExpectedWarnings(logging.Filter):
    """Warnings that are expected here: a weight sync loads one bucket of layers per reload, and vLLM warns
    about every layer the bucket does not hold (the sender checks that every weight is sent);
    chat-template warm-up needs the tokenizer this engine deliberately skips, and with images in one
    process vLLM's own processor sets torch threads on every call, which its CPU worker refuses with a
    warning (thousands per run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        partial = "Failed to load weights" in message or message.startswith("Following weights were not loaded")
        return not (partial or message.startswith("Chat template warmup failed")
                    or message.startswith("CPU backend doesn't allow to use `torch.set_num_threads`"))


class VLLMEngine:
    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int = 256,
        kv_cache_gib: int = 1,
        gpu_memory_utilization: float = 0.5,
        max_num_seqs: int = 256,
        enforce_eager: bool | None = None,
        sleep_mode: bool = False,
        tensor_parallel_size: int = 1,
        max_images_per_prompt: int = 0,
        image_min_pixels: int | None = None,
        image_max_pixels: int | None = None,
        tokenizer: str | None = None,
    ):
        """`tokenizer`: the trainer's tokenizer folder when it is not the model's (model.tokenizer)."""
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        self.tensor_parallel_size = tensor_parallel_size
        self.weights_dir = None
        if tensor_parallel_size > 1 and not torch.cuda.is_available():
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_binding(tensor_parallel_size))
        from vllm import LLM

        vision_kwargs = self._vision_setup(model_path, max_images_per_prompt, image_min_pixels, image_max_pixels)
        for name in ("vllm.model_executor.model_loader.reload.layerwise",
                     "vllm.model_executor.model_loader.reload.inplace", "vllm.renderers.base",
                     "vllm.v1.worker.cpu_worker"):
            logging.getLogger(name).addFilter(_DropExpectedWarnings())

        # One CPU engine in this process, of a family whose layers only need a repack after loading: weights
        # are synced in place (_copy_in_place); others (MoE, MLA, state-space layers) through reload_weights.
        model_type = json.loads((Path(model_path) / "config.json").read_text()).get("model_type")
        self.in_place = (not torch.cuda.is_available() and tensor_parallel_size == 1
                         and model_type in IN_PLACE_MODEL_TYPES)
        eager = not torch.cuda.is_available() if enforce_eager is None else enforce_eager
        # Without compiled model graphs on CPU, vLLM still torch.compiles a sampler helper (the sampled token's
        # rank, which the trainer never reads); inductor builds C++ for it on the first generate: 13 s on a
        # fresh machine, 2 s from its cache. Eager, it costs nothing measurable.
        self.force_eager = eager and not torch.cuda.is_available()
        # vLLM calls gc.collect() several times while it builds (a paused collector, trainer/gc_pause.py, does
        # not stop those), each a pass over every object the imports made: 1.5 s for SmolLM2 here, 0.1 s with
        # those objects frozen.
        gc.freeze()
        try:
            with _keep_cpu_linear_weights() if self.in_place else nullcontext():
                self.llm = LLM(
                    model=model_path,
                    tokenizer=tokenizer or model_path,
                    dtype=dtype,
                    seed=seed,
                    max_model_len=max_model_len,
                    # The processor vLLM runs on images needs the tokenizer; text-only prompts arrive as ids.
                    skip_tokenizer_init=self.image_token_id is None,
                    gpu_memory_utilization=gpu_memory_utilization,
                    max_num_seqs=max_num_seqs,
                    enforce_eager=eager,
                    # Log-probs after temperature scaling, matching the actor's recomputation.
                    logprobs_mode="processed_logprobs",
                    enable_prefix_caching=False,
                    # Sleep mode needs CUDA's memory pool; the CPU build has no use for it.
                    enable_sleep_mode=sleep_mode and torch.cuda.is_available(),
                    tensor_parallel_size=tensor_parallel_size,
                    **({"distributed_executor_backend": "mp"} if tensor_parallel_size > 1 else {}),
                    **vision_kwargs,
                )
        finally:
            gc.unfreeze()
        self.sleep_mode = sleep_mode and torch.cuda.is_available()
        # Per-request seeds make sampling independent of batching, but vLLM's CPU path fails on them
        # once a prompt batch is prefilled in chunks ("CPU Generator does not use offset"); on CPU the
        # engine's own seeded generator is used instead (a rerun from scratch still samples the same).
        self.per_request_seeds = torch.cuda.is_available()

    def _vision_setup(self, model_path: str, max_images: int, min_pixels: int | None, max_pixels: int | None) -> dict:
        """vLLM arguments for a vision-language model folder (none for a text model)."""
        from trainer.vision import is_vision_model, load_processor, register_image_only_processor

        self.image_token_id, self.banned_tokens = None, []
        if not is_vision_model(model_path):
            return {}
        register_image_only_processor()
        config = json.loads((Path(model_path) / "config.json").read_text())
        self.image_token_id = config["image_token_id"]
        # Never sampled: a placeholder in a response would need image features that do not exist.
        self.banned_tokens = [config[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                                  "vision_end_token_id") if config.get(k) is not None]
        kwargs = {"model_impl": "transformers", "limit_mm_per_prompt": {"image": max(1, max_images)}}
        if min_pixels or max_pixels:
            # The same resize bounds as the trainer's processor (model.image_min_pixels / image_max_pixels).
            size = load_processor(model_path, min_pixels, max_pixels).image_processor.size
            kwargs["mm_processor_kwargs"] = {"size": dict(size)}
        return kwargs

    def sleep(self) -> None:
        if self.sleep_mode:
            # Level 1: weights go to CPU memory, the KV cache is dropped; new weights arrive after wake-up.
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.sleep_mode:
            self.llm.wake_up()

    def generate(
        self, prompts: list[list[int]], spec: SamplingSpec, indices: list[int] | None = None,
        media: list | None = None,
    ) -> list[Completion]:
        """`media[i]` (trainer.vision.Media or None) holds prompt i's images."""
        done = [c for part in self.generate_stream(prompts, spec, indices, media) for c in part]
        place = {index: k for k, index in enumerate(range(len(prompts)) if indices is None else indices)}
        return sorted(done, key=lambda c: (place[c.prompt_index], c.sample))

    def generate_stream(
        self, prompts: list[list[int]], spec: SamplingSpec, indices: list[int] | None = None,
        media: list | None = None, parts: int = STREAM_PARTS,
    ) -> Iterator[list[Completion]]:
        """`generate`, handed out as completions finish, in about `parts` lists, so the caller scores early
        ones while the engine decodes the rest."""
        from vllm import SamplingParams

        indices = list(range(len(prompts))) if indices is None else indices
        media = media or [None] * len(prompts)
        if any(m is not None for m in media) and self.image_token_id is None:
            raise ValueError(f"sample {next(m for m in media if m).source}: has images but the rollout model is text-only")
        # One request per completion (what vLLM makes of n > 1 inside, seeds included), so each leaves when done.
        params = [
            SamplingParams(
                n=1,
                temperature=spec.temperature,
                top_p=spec.top_p,
                top_k=spec.top_k if spec.top_k > 0 else -1,
                max_tokens=spec.max_new_tokens,
                stop_token_ids=list(spec.stop_token_ids),
                logprobs=0,
                seed=spec.seed + index + sample if self.per_request_seeds else None,
                detokenize=False,
                # -100 is vLLM's floor for a bias; it takes those tokens' probability to about e^-100.
                logit_bias={token: -100.0 for token in self.banned_tokens} or None,
            )
            for index in indices for sample in range(spec.n)
        ]
        rendered = [self._prompt(p, m) for p, m in zip(prompts, media)]
        # LLM.generate's enqueue and engine loop, run here so that finished completions leave early.
        engine = self.llm.llm_engine
        with torch.compiler.set_stance("force_eager") if self.force_eager else nullcontext():
            request_ids = self.llm.enqueue([r for r in rendered for _ in range(spec.n)], params, use_tqdm=False)
            # enqueue returns the engine's ids: the id an output carries, "-", a random suffix.
            place = {request_id.split("-", 1)[0]: divmod(r, spec.n) for r, request_id in enumerate(request_ids)}
            unfinished, finished = set(request_ids), []
            every = max(1, -(-len(request_ids) // parts))
            try:
                while engine.has_unfinished_requests():
                    finished += [output for output in engine.step() if output.finished]
                    if finished and (len(finished) >= every or not engine.has_unfinished_requests()):
                        ready, finished = [(output, *place[output.request_id]) for output in finished], []
                        unfinished.difference_update(request_ids[k * spec.n + j] for _, k, j in ready)
                        yield [self._completion(output, indices[k], j, prompts[k], media[k])
                               for output, k, j in ready]
            finally:  # a caller that stops early (or an error) leaves no request behind in the engine
                if unfinished:
                    engine.abort_request(list(unfinished), internal=True)

    def _completion(self, output, prompt_index: int, sample: int, prompt: list[int], item) -> Completion:
        if item is not None and list(output.prompt_token_ids) != list(prompt):
            raise ValueError(
                f"sample {item.source}: vLLM's processor expanded its images to "
                f"{list(output.prompt_token_ids).count(self.image_token_id)} image tokens, the trainer's to "
                f"{list(prompt).count(self.image_token_id)} (the two processors resize images differently)"
            )
        (out,) = output.outputs
        token_ids = list(out.token_ids)
        logprobs = [step[tok].logprob for step, tok in zip(out.logprobs or [], token_ids)]
        return Completion(prompt_index=prompt_index, token_ids=token_ids, logprobs=logprobs,
                          finished=out.finish_reason == "stop", sample=sample)

    def _prompt(self, token_ids: list[int], media):
        from vllm.inputs import TokensPrompt

        if media is None:
            return TokensPrompt(prompt_token_ids=list(token_ids))
        from trainer.vision import collapse_image_runs, load_images

        return TokensPrompt(
            prompt_token_ids=collapse_image_runs(list(token_ids), self.image_token_id),
            multi_modal_data={"image": load_images(list(media.image_paths), media.source)},
        )

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        if self.image_token_id is not None:
            from trainer.model_files import checkpoint_names

            state_dict = checkpoint_names(state_dict)
        if self.in_place:
            self.llm.collective_rpc(_copy_in_place, args=(list(state_dict.items()),))
        elif self.tensor_parallel_size == 1:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(state_dict.items())})
        else:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": self._write_shared(state_dict)})
        self.llm.reset_prefix_cache()
        if self.image_token_id is not None:
            # Image features computed with the old weights must not be reused.
            self.llm.llm_engine.reset_encoder_cache()

    def _write_shared(self, state_dict: dict[str, torch.Tensor]) -> str:
        """Write the weights where all tensor-parallel shards can read them; the folder is reused."""
        from safetensors.torch import save_file

        if self.weights_dir is None:
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            self.weights_dir = tempfile.mkdtemp(prefix="rollout-weights-", dir=shm)
        # Tied weights (lm_head = embed_tokens) share storage, which safetensors refuses: store copies.
        # The lm_head entry still matters: loading it is what refreshes vLLM's CPU copy of the head.
        seen, tensors = set(), {}
        for name, tensor in state_dict.items():
            key = (tensor.data_ptr(), tensor.shape)
            tensors[name] = tensor.detach().cpu().clone() if key in seen else tensor.detach().cpu().contiguous()
            seen.add(key)
        save_file(tensors, os.path.join(self.weights_dir, "model.safetensors"))
        return self.weights_dir

    def close(self) -> None:
        if self.weights_dir is not None:
            shutil.rmtree(self.weights_dir, ignore_errors=True)

    def weights(self) -> dict[str, torch.Tensor]:
        """The weights the engine computes with, under vLLM's names (fused qkv_proj, gate_up_proj).

        On CPU vLLM computes linear layers (the LM head included) with weights it packed for its
        kernels, so those are read back through the layer itself: x = I gives W^T.
        """

        def read(worker):
            model = worker.model_runner.model
            out = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.numel() > 0}
            with torch.no_grad():
                for name, module in _packed_layers(model):
                    size = getattr(module, "input_size_per_partition", None) or module.weight.shape[1]
                    eye = torch.eye(size, dtype=module.weight.dtype)
                    out[f"{name}.weight"] = module.quant_method.apply(module, eye, bias=None).T.contiguous().cpu()
            return out

        if self.tensor_parallel_size > 1:
            raise NotImplementedError("weights() reads one engine process; with tensor parallelism each holds a slice")
        return self.llm.collective_rpc(read)[0]


def cpu_binding(tensor_parallel_size: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for the CPU build: one disjoint core list per shard ("0|1", "0,1|2,3")."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < tensor_parallel_size:
        raise ValueError(
            f"rollout.tensor_parallel_size={tensor_parallel_size} needs a core per shard; this process may use "
            f"{len(cores)} cores"
        )
    per_shard = len(cores) // tensor_parallel_size
    shards = [cores[i * per_shard : (i + 1) * per_shard] for i in range(tensor_parallel_size)]
    return "|".join(",".join(map(str, shard)) for shard in shards)


@contextmanager
def _keep_cpu_linear_weights():
    """While vLLM builds its model on CPU, keep each linear layer's weight beside the oneDNN-packed copy the
    layer computes with (vLLM frees it). A sync can then copy new weights in place and repack the changed
    layers (_copy_in_place) instead of rebuilding every layer through `reload_weights`. SmolLM2-135M:
    0.28 s against 0.47 s, 0.19 s of either being the packing; the price is a second copy of the linear
    weights in memory. Generation is unchanged: the same packed kernels compute it."""
    import vllm.model_executor.layers.utils as layer_utils

    dispatch = layer_utils.dispatch_cpu_unquantized_gemm
    layer_utils.dispatch_cpu_unquantized_gemm = lambda layer, remove_weight: dispatch(layer, remove_weight=False)
    try:
        yield
    finally:
        layer_utils.dispatch_cpu_unquantized_gemm = dispatch


def _copy_in_place(worker, named_tensors: list) -> None:
    """Runs in vLLM's worker: load through the model's own loader (it fuses q/k/v and gate/up), then repack
    every layer whose weight changed. A tied LM head shares the embedding's storage: its own entry is
    dropped (the loader refuses it in a bucket without the embedding) and its layer is repacked with the
    embedding's."""
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    model = worker.model_runner.model
    aliases = dict(model.named_parameters(remove_duplicate=False)).keys() - dict(model.named_parameters()).keys()
    with torch.no_grad():
        loaded = model.load_weights((name, tensor) for name, tensor in named_tensors if name not in aliases)
    params = dict(model.named_parameters(remove_duplicate=False))
    # A loader that reports no names, or names no parameter has, is not trusted: everything is repacked.
    changed = None if loaded is None or set(loaded) - params.keys() else {params[n].data_ptr() for n in loaded}
    for _, module in _packed_layers(model):
        if changed is None or module.weight.data_ptr() in changed:
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)


def _packed_layers(model):
    """(name, module) of the layers that compute with a packed copy of their weight (on CPU): linear layers
    and the LM head. An input embedding gets a packed copy too, unused: its lookup reads the weight."""
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

    for name, module in model.named_modules():
        plain_embedding = isinstance(module, VocabParallelEmbedding) and not isinstance(module, ParallelLMHead)
        if hasattr(module, "cpu_linear") and not plain_embedding:
            yield name, module
