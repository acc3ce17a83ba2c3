"""Language codes and names as datasets write them -> ISO 639 codes.

A leaf module, so dataset preprocessing and the language_consistency reward accept the same aliases.
"""

from __future__ import annotations

from typing import Any

# Old or alternative codes, and a few names, that datasets use for the prompt language.
_CODE_ALIASES = {
    "iw": "he", "in": "id", "ji": "yi", "jw": "jv", "nb": "no", "nn": "no", "fil": "tl", "zho": "zh", "chi": "zh",
    "eng": "en", "jpn": "ja", "kor": "ko", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de", "spa": "es",
    "rus": "ru", "tha": "th", "ara": "ar", "por": "pt", "ita": "it", "vie": "vi",
    "english": "en", "chinese": "zh", "japanese": "ja", "korean": "ko", "french": "fr", "german": "de",
    "spanish": "es", "russian": "ru", "thai": "th", "arabic": "ar", "portuguese": "pt", "italian": "it",
    "vietnamese": "vi", "bengali": "bn", "telugu": "te", "swahili": "sw", "indonesian": "id", "hindi": "hi",
}


def normalize_language(code: Any) -> str | None:
    """``"zh-CN"``, ``"ZH_hans"``, ``"chi"``, ``"Chinese"`` -> ``"zh"``; None when not a usable string."""
    if not isinstance(code, str):
        return None
    text = code.strip().lower().replace("_", "-")
    if not text:
        return None
    if text in _CODE_ALIASES:
        return _CODE_ALIASES[text]
    base = text.split("-", 1)[0]
    return _CODE_ALIASES.get(base, base)
