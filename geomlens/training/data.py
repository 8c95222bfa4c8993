"""Training data: a token stream (the bundled corpus, `geomlens.models.tokens.load_token_stream`)
split train/validation, and batches of contiguous windows drawn with a seeded generator.

The *last* ``val_fraction`` of the stream is held out; validation uses fixed consecutive windows
from its start.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.errors import InputError


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
