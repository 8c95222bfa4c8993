"""Bundled corpus, segmenting, token batches, the text-source group of every command, and the
map between a model's token ids and its tokenizer's.

Names are imported lazily, so that configs can use `TextSource` without loading torch or
datasets.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DOMAINS": "geomlens.data.corpus", "load_corpus": "geomlens.data.corpus",
    "TextSource": "geomlens.data.source", "check_text_source": "geomlens.data.source",
    "load_segments": "geomlens.data.source", "batch_sequences": "geomlens.data.batching",
    "token_stream": "geomlens.data.batching", "tokenize_segments": "geomlens.data.batching",
    "TokenMap": "geomlens.data.token_map", "token_map": "geomlens.data.token_map",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'geomlens.data' has no attribute {name!r}")
