"""Text in: a text, a list of texts, or token ids -> the model's token sequences.

Every public function that reads a user's text goes through `as_sequences` (or `as_batch`),
as TransformerLens's ``model.to_tokens`` would take it:

    as_sequences(model, "The capital of France is")         # [tensor([bos, ...])]
    as_sequences(model, ["one text", "another"])           # one 1-D tensor per text
    as_sequences(model, tokens)                            # [pos] or [batch, pos] ids, or a list of ints
    as_sequences(model, [t1, t2])                          # a list of 1-D id tensors (any lengths)
    tokens, lengths = as_batch(model, ["a", "longer text"])  # right-padded [batch, pos] + lengths

Texts are tokenized with the model's own tokenizer and BOS handling (``model.to_tokens``); a
model trained with a reduced vocabulary (`geomlens.data.token_map`) gets its own ids. A user's
text is never cut silently: beyond the model's context it is a one-line `InputError`; beyond a
``max_tokens`` the caller asked for it is cut with one warning line.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence, Union

import torch
from jaxtyping import Int
from torch import Tensor

from geomlens.data.batching import batch_sequences
from geomlens.data.token_map import token_map
from geomlens.errors import InputError

logger = logging.getLogger(__name__)

#: what `as_sequences` takes
TextInput = Union[str, Sequence[str], Tensor, Sequence[int], Sequence[Tensor]]


def _tokenize(model: Any, text: str, where: str) -> Int[Tensor, "pos"]:
    if getattr(model, "tokenizer", None) is not None:
        return model.to_tokens(text)[0].cpu()
    tm = token_map(model)
    if tm.tokenizer is None:
        raise InputError(f"{where}: this model has no tokenizer; pass token ids.")
    return tm.from_original(tm.tokenizer(text)["input_ids"])


def as_sequences(model: Any, inputs: Any, *, where: str = "input",
                 max_tokens: int | None = None) -> list[Int[Tensor, "pos"]]:
    """text | list of texts | token ids ([pos], [batch, pos], a list of ints, a list of 1-D
    tensors of any lengths) -> 1-D long token tensors on the CPU, one per sequence.

    Args:
        model: a HookedTransformer (its tokenizer, ``cfg.n_ctx``).
        inputs: what the user gave (a `TextInput`; anything else is a one-line `InputError`).
        where: the caller's name, for error messages.
        max_tokens: cut longer sequences to this many tokens, with one warning line naming how
            many were cut (None = keep every token; over ``n_ctx`` is an error).
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    if isinstance(inputs, Tensor):
        if inputs.ndim not in (1, 2):
            raise InputError(f"{where}: token ids must be [pos] or [batch, pos], got shape "
                             f"{tuple(inputs.shape)}")
        seqs = [inputs] if inputs.ndim == 1 else list(inputs)
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, int) for t in inputs):
        seqs = [torch.tensor(inputs)]
    elif (isinstance(inputs, (list, tuple)) and inputs
          and all(isinstance(t, Tensor) and t.ndim == 1 for t in inputs)):
        seqs = list(inputs)
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
        for i, text in enumerate(inputs):
            if not text.strip():
                raise InputError(f"{where}: text {i} is empty.")
        seqs = [_tokenize(model, t, where) for t in inputs]
    else:
        raise InputError(f"{where}: give a text, a list of texts or token ids, not "
                         f"{type(inputs).__name__}.")
    seqs = [s.reshape(-1).long().cpu() for s in seqs]
    return _check_lengths(model, seqs, where, max_tokens)


def _check_lengths(model: Any, seqs: list[Tensor], where: str, max_tokens: int | None) -> list[Tensor]:
    n_ctx = model.cfg.n_ctx
    for s in seqs:
        if s.numel() == 0:
            raise InputError(f"{where}: a sequence has no tokens.")
    if max_tokens is not None:
        cut = [len(s) for s in seqs if len(s) > max_tokens]
        if cut:
            logger.warning("%s: %d of %d sequence(s) are longer than max_tokens=%d (up to %d tokens) "
                           "and were cut to their first %d tokens", where, len(cut), len(seqs),
                           max_tokens, max(cut), max_tokens)
            seqs = [s[:max_tokens] for s in seqs]
    for s in seqs:
        if s.numel() > n_ctx:
            raise InputError(f"{where}: a sequence has {s.numel()} tokens, more than the model's "
                             f"context of {n_ctx}; shorten it (nothing is cut).")
    return seqs


def as_batch(model: Any, inputs: TextInput, *, where: str = "input", max_tokens: int | None = None,
             pad_id: int = 0) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch"]]:
    """`as_sequences`, right-padded into one batch: ``(tokens, lengths)``."""
    seqs = as_sequences(model, inputs, where=where, max_tokens=max_tokens)
    return next(batch_sequences(seqs, batch_size=len(seqs), pad_id=pad_id))
