"""Bundled corpus, segmenting and token batches."""

from geomlens.data.batching import batch_sequences, token_stream, tokenize_segments
from geomlens.data.corpus import DOMAINS, load_corpus

__all__ = ["DOMAINS", "load_corpus", "tokenize_segments", "batch_sequences", "token_stream"]
