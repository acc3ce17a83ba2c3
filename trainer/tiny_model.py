"""The embedded default model: a tiny Qwen2 and its tokenizer, built locally (no hub).

The vocabulary covers the quickstart's arithmetic: digits, `+ = ,`, and the
answer-format markers as single tokens, so a 0.7M-parameter model can learn the
format in a minute of SFT. The architecture is stock Qwen2, so vLLM and HF load
it like any hub checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.config import TinyModelConfig, TinyVisionConfig

EOS = "<|endoftext|>"
UNK = "<unk>"
# Single tokens for the structure the rewards look at.
MARKERS = ["<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "}"]
CHARACTERS = list("0123456789+=,")


def _byte_level_backend(characters: list[str], words: tuple[str, ...] = ()):
    """A byte-level BPE over `characters`, wired the way Qwen2's tokenizer is: NFC, Qwen2's
    pre-tokenizer split, then ByteLevel. Without `words` it has no merges (one token per character);
    each word in `words` (byte-level form, "Ġ" for a leading space) gets a left-to-right chain of
    merges, so it becomes one token, and so does each of its prefixes."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    vocab = {UNK: 0}
    for ch in characters:
        vocab[ch] = len(vocab)
    merges = []
    for word in words:
        for end in range(2, len(word) + 1):
            if word[:end] not in vocab:
                merges.append((word[:end - 1], word[end - 1]))
                vocab[word[:end]] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    return backend


def build_tokenizer():
    """A byte-level BPE with no merges, wired the way Qwen2's tokenizer is.

    `AutoTokenizer` maps any `model_type=qwen2` folder to Qwen2's tokenizer class,
    which installs Qwen2's normaliser and pre-tokeniser; building ours with the same
    pipeline keeps the ids identical whichever class loads the folder.
    """
    from transformers import PreTrainedTokenizerFast

    backend = _byte_level_backend(CHARACTERS)
    backend.add_special_tokens([EOS, *MARKERS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS, pad_token=EOS, unk_token=UNK, clean_up_tokenization_spaces=False
    )


# Whole-word tokens for the synthetic spatial questions (data/spatial_scenes.py): a question becomes
# ~12 tokens instead of ~60. Shorter prompts learnt faster in a probe (what colour is the one shape:
# learnt in 150 SFT steps after a 1-token question, not in 400 after a 60-character one). A tokenizer
# trained on that text would merge the same words.
VL_WORDS = (
    "How", "Is", "Which", "Give",
    *("Ġ" + word for word in (
        "many", "objects", "are", "there", "is", "the", "left", "right", "above", "below", "of", "or", "closer",
        "to", "camera", "box", "red", "green", "blue", "yellow", "circles", "squares", "triangles",
    )),
)
VL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
              "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL's chat layout: an image part becomes <|vision_start|><|image_pad|><|vision_end|>, which the
# processor widens to one pad per merged patch.
VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_vl_tokenizer():
    """Byte-level over all 256 bytes, with whole-word merges for VL_WORDS; markers and Qwen's specials
    are single tokens."""
    from tokenizers import pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = _byte_level_backend(sorted(pre_tokenizers.ByteLevel.alphabet()), VL_WORDS)
    backend.add_special_tokens([*VL_SPECIAL, *MARKERS[:-1]])  # "}" stays a character: boxes hold "[1,2,3,4]}"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = VL_CHAT_TEMPLATE
    return tokenizer


def build_tiny_vl_processor(image_pixels: int, tokenizer=None):
    """The tiny Qwen2-VL's processor (images resized to about `image_pixels`), without the model."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from trainer.vision import image_only_processor_class

    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=image_pixels, max_pixels=image_pixels, patch_size=14, merge_size=2, temporal_patch_size=2,
    )
    return image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer or build_vl_tokenizer(),
                                        chat_template=VL_CHAT_TEMPLATE)


def build_tiny_vl_model(cfg: TinyModelConfig, vision: TinyVisionConfig, out_dir: Path, seed: int,
                        image_pixels: int) -> Path:
    """Build (or reuse) a tiny Qwen2-VL with its processor; images are resized to about `image_pixels`."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    marker = out_dir / "tiny_model.json"
    wanted = {"config": dict(cfg.__dict__), "vision": dict(vision.__dict__), "seed": seed, "image_pixels": image_pixels}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return out_dir
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    if head_dim < 32 or head_dim % 8:
        raise ValueError(f"model.tiny: head_dim {head_dim} must be >= 32 (vLLM CPU attention) and a multiple of 8")
    tokenizer = build_vl_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    # Rotary sections (temporal, height, width) split head_dim / 2 the way Qwen2-VL's 16/24/24 of 64 does.
    half = head_dim // 2
    mrope = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": vision.text_rope_theta, "mrope_section": mrope},
            bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=vision.depth, embed_dim=vision.embed_dim, num_heads=vision.num_heads, mlp_ratio=vision.mlp_ratio,
            hidden_size=cfg.hidden_size, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
        ),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    processor = build_tiny_vl_processor(image_pixels, tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    marker.write_text(json.dumps(wanted))
    return out_dir


def build_tiny_model(cfg: TinyModelConfig, out_dir: Path, seed: int) -> Path:
    """Build (or reuse, when `out_dir` already holds one) the tiny model and tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    marker = out_dir / "tiny_model.json"
    wanted = {"config": cfg.__dict__ if hasattr(cfg, "__dict__") else dict(cfg), "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return out_dir
    if cfg.hidden_size // cfg.num_attention_heads < 32:
        # vLLM's CPU attention kernel supports head_dim 32 and up.
        raise ValueError(
            f"model.tiny: hidden_size/num_attention_heads = {cfg.hidden_size // cfg.num_attention_heads}; "
            "head_dim must be >= 32 for vLLM's CPU attention"
        )
    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    marker.write_text(json.dumps(wanted))
    return out_dir
