"""`load_tokenizer(name)`: the native tokenizer of an offline model (no weights loaded)."""

from __future__ import annotations

from geomlens.models.cache import model_cache_dir
from geomlens.models.gguf import load_tokenizer_from_gguf
from geomlens.models.zoo import get_offline_model


def load_tokenizer(name: str = "smollm2-135m"):
    """The tokenizer of an offline model (from the cache, else from its GGUF)."""
    from transformers import AutoTokenizer

    tok_dir = model_cache_dir(name) / "tokenizer"
    if tok_dir.exists():
        return AutoTokenizer.from_pretrained(str(tok_dir))
    return load_tokenizer_from_gguf(get_offline_model(name).locate())
