"""The bundled corpus as one token stream per tokenizer, tokenized once and cached.

The stream (`geomlens.data.token_stream`: documents joined with EOS) is cached as a ``.pt`` file
of one LongTensor under ``<cache root>/tokens`` (`geomlens.paths.cache_root`), keyed by
split, tokenizer and a hash of the corpus file, so a second run loads it instantly. Training
(`geomlens.training.data`) splits it; the projection thread counts token frequencies in it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from geomlens.data import load_corpus, token_stream
from geomlens.data.corpus import CORPUS_DIR
from geomlens.models.tokenizer import load_tokenizer
from geomlens.paths import cache_root

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``<cache root>/tokens`` (``$GEOMLENS_CACHE/tokens`` or ``~/.cache/geomlens/tokens``)."""
    return cache_root() / "tokens"


def _corpus_hash(split: str) -> str:
    path = CORPUS_DIR / f"{split}.txt.gz"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def load_token_stream(split: str, *, tokenizer_name: str = "smollm2-135m") -> Int[Tensor, "n_tokens"]:
    """The whole split as one LongTensor of token ids (tokenized once, then read from the cache
    with ``torch.load(weights_only=True)``)."""
    path = cache_dir() / f"{split}-{tokenizer_name}-{_corpus_hash(split)}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    logger.info("Tokenizing %s with the %s tokenizer (cached afterwards in %s)", split, tokenizer_name, path)
    tokenizer = load_tokenizer(tokenizer_name)
    stream = token_stream(tokenizer, load_corpus(split=split)["text"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(stream, tmp)
    tmp.replace(path)  # atomic: concurrent runs never read a half-written file
    return stream
