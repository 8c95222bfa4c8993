"""Training data: the bundled corpus as one token stream, cached, split train/validation, and
batches of contiguous windows drawn with a seeded generator.

The stream (`token_stream`: documents joined with EOS) is cached as a ``.pt`` file under
``$GEOMLENS_CACHE/tokens`` (default ``~/.cache/geomlens/tokens``), keyed by split, tokenizer and a
hash of the corpus file, so a second run loads it instantly. The *last* ``val_fraction`` of the
stream is held out; validation uses fixed consecutive windows from its start.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.errors import InputError
from geomlens.paths import cache_root

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``$GEOMLENS_CACHE/tokens`` or ``~/.cache/geomlens/tokens``."""
    return cache_root() / "tokens"


def _corpus_hash(split: str) -> str:
    from geomlens.data.corpus import CORPUS_DIR

    path = CORPUS_DIR / f"{split}.txt.gz"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def load_token_stream(split: str, *, tokenizer_name: str = "smollm2-135m") -> Int[Tensor, "n_tokens"]:
    """The whole split as one LongTensor of token ids (tokenized once, then read from the cache)."""
    path = cache_dir() / f"{split}-{tokenizer_name}-{_corpus_hash(split)}.pt"
    if path.exists():
        return torch.load(path)
    from geomlens.data import load_corpus, token_stream
    from geomlens.models import load_tokenizer

    logger.info("Tokenizing %s with the %s tokenizer (cached afterwards in %s)", split, tokenizer_name, path)
    tokenizer = load_tokenizer(tokenizer_name)
    stream = token_stream(tokenizer, load_corpus(split=split)["text"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(stream, tmp)
    tmp.replace(path)  # atomic: concurrent runs never read a half-written file
    return stream


@dataclass(kw_only=True)
class TokenData:
    """A token stream split into training and held-out parts."""

    train: Int[Tensor, "n_train"]
    """Training tokens (the first part of the stream)."""
    val: Int[Tensor, "n_val"]
    """Held-out tokens (the last ``val_fraction`` of the stream)."""

    kept: Int[Tensor, "d_vocab_kept"] | None = None
    """Original token ids kept by `reduce_vocab` (new id = position); None = not reduced."""

    @classmethod
    def from_stream(cls, stream: Int[Tensor, "n_tokens"], *, val_fraction: float) -> TokenData:
        n_val = max(2, int(round(len(stream) * val_fraction)))
        if len(stream) - n_val < 2:
            raise InputError(f"Token stream of {len(stream)} tokens is too short to split.")
        return cls(train=stream[:-n_val], val=stream[-n_val:])

    def reduce_vocab(self, vocab_size: int) -> TokenData:
        """Keep the ``vocab_size − 1`` most frequent *training* tokens (ties: lower id first), as
        ids 0..vocab_size−2 in frequency order; every other token becomes ``vocab_size − 1``."""
        counts = torch.bincount(self.train)
        order = sorted(range(len(counts)), key=lambda v: (-int(counts[v]), v))
        kept = torch.tensor(order[: vocab_size - 1], dtype=torch.long)
        oov = vocab_size - 1
        table = torch.full((int(max(self.train.max(), self.val.max())) + 1,), oov, dtype=torch.long)
        table[kept] = torch.arange(len(kept))
        return TokenData(train=table[self.train], val=table[self.val], kept=kept)

    def unigram_log_prior(self, d_vocab: int) -> Float[Tensor, "d_vocab"]:
        """Centred log unigram probabilities of the training tokens, add-one smoothed:
        log((c_v + 1) / (N + |V|)) minus its mean over the vocabulary."""
        counts = torch.bincount(self.train, minlength=d_vocab)[:d_vocab].double()
        logp = torch.log((counts + 1.0) / (counts.sum() + d_vocab))
        return (logp - logp.mean()).float()


def get_batch(
    data: Int[Tensor, "n_tokens"], *, batch_size: int, seq_len: int, generator: torch.Generator
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """``batch_size`` random contiguous windows (inputs, next-token targets), nanoGPT-style."""
    if len(data) < seq_len + 2:
        raise InputError(f"{len(data)} training tokens cannot fill a window of {seq_len + 1}.")
    ix = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + seq_len] for i in ix.tolist()])
    y = torch.stack([data[i + 1 : i + 1 + seq_len] for i in ix.tolist()])
    return x, y


def eval_windows(
    data: Int[Tensor, "n_tokens"], *, seq_len: int, max_tokens: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Consecutive non-overlapping windows from the start of ``data`` covering at most
    ``max_tokens`` predicted tokens (the same windows at every evaluation)."""
    seq_len = min(seq_len, len(data) - 1)
    n = max(1, min(max_tokens // seq_len, (len(data) - 1) // seq_len))
    starts = torch.arange(n) * seq_len
    x = torch.stack([data[s : s + seq_len] for s in starts.tolist()])
    y = torch.stack([data[s + 1 : s + 1 + seq_len] for s in starts.tolist()])
    return x, y
