"""Tokenizing segments into token batches that respect ``n_ctx``.

Over-long text is handled by ``overflow``:
    "truncate"  keep the first ``max_tokens`` tokens (default; what `analyze` records)
    "window"    split into consecutive non-overlapping windows of ``max_tokens`` tokens
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from geomlens.errors import InputError

Overflow = Literal["truncate", "window"]


def tokenize_segments(
    tokenizer,
    texts: Sequence[str],
    *,
    max_tokens: int,
    overflow: Overflow = "truncate",
    prepend_bos: bool | None = None,
    min_tokens: int = 2,
) -> list[Int[Tensor, "_pos"]]:
    """Tokenize each text; return one 1-D token tensor per (window of a) segment.

    Args:
        tokenizer: a Hugging Face tokenizer.
        texts: the segments. An empty or whitespace-only text raises `InputError`.
        max_tokens: at most this many tokens per returned sequence (use the model's n_ctx or less).
        overflow: "truncate" or "window" (see module docstring).
        prepend_bos: None = the tokenizer's default; True/False forces a BOS token.
        min_tokens: windows shorter than this are dropped (a next-token metric needs >= 2).
    """
    if max_tokens < min_tokens:
        raise InputError(f"max_tokens={max_tokens} must be >= {min_tokens}.")
    out: list[Tensor] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"Text {i} is empty; every segment needs at least one token.")
        ids = tokenizer(text, add_special_tokens=prepend_bos is not False)["input_ids"]
        bos = tokenizer.bos_token_id
        if prepend_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        t = torch.tensor(ids, dtype=torch.long)
        if overflow == "truncate":
            pieces = [t[:max_tokens]]
        elif overflow == "window":
            pieces = list(t.split(max_tokens))
        else:
            raise InputError(f"overflow must be 'truncate' or 'window', not {overflow!r}")
        out.extend(p for p in pieces if len(p) >= min_tokens)
    return out


def batch_sequences(
    seqs: Sequence[Int[Tensor, "_pos"]], *, batch_size: int, pad_id: int = 0
) -> Iterator[tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch"]]]:
    """Yield right-padded batches ``(tokens, lengths)``, in order. Padding never changes
    earlier positions' outputs in a causal model; callers mask with ``lengths``."""
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        lengths = torch.tensor([len(s) for s in chunk])
        tokens = torch.full((len(chunk), int(lengths.max())), pad_id, dtype=torch.long)
        for row, s in enumerate(chunk):
            tokens[row, : len(s)] = s
        yield tokens, lengths


@dataclass
class ValidPositions:
    """The valid positions (``pos < length``) of a right-padded batch, in (row, position) order."""

    batch_idx: Int[Tensor, "n_positions"]
    pos: Int[Tensor, "n_positions"]
    token: Int[Tensor, "n_positions"]
    has_next: Bool[Tensor, "n_positions"]
    """False at the last valid position of each row."""
    next_token: Int[Tensor, "n_positions"]
    """The token at ``pos + 1`` (0 where there is none)."""

    @classmethod
    def of(cls, tokens: Int[Tensor, "batch pos"], lengths: Int[Tensor, "batch"]) -> ValidPositions:
        max_pos = tokens.shape[1]
        valid = torch.arange(max_pos, device=tokens.device)[None, :] < lengths[:, None]
        batch_idx, pos = valid.nonzero(as_tuple=True)
        has_next = pos + 1 < lengths[batch_idx]
        next_token = torch.where(has_next, tokens[batch_idx, (pos + 1).clamp_max(max_pos - 1)], 0)
        return cls(batch_idx, pos, tokens[batch_idx, pos], has_next, next_token)


def token_stream(tokenizer, texts: Sequence[str], *, eos_between: bool = True) -> Int[Tensor, "n_tokens"]:
    """Concatenate documents into one token stream (EOS between documents) for LM training."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos_between and eos is not None:
            ids.append(eos)
    if not ids:
        raise InputError("No tokens: all texts were empty.")
    return torch.tensor(ids, dtype=torch.long)
