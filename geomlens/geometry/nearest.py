"""Nearest embeddings beside most probable tokens: one position of one context, as a table.

For the hidden state the head reads, h = ``unembed.hook_in`` at position ``pos``, the table lists
the ``n`` rows of ``W_E`` nearest to h (Euclidean ‖h − e_v‖, `geomlens.geometry.distances`) and,
beside them, the ``n`` most probable next tokens p = softmax(logits at ``pos``). Rank i of one
column has nothing to do with rank i of the other: the table shows whether the two orders agree.

    nearest_vs_probable(model, "The capital of France is", n=8)
    #    nearest_token  nearest_token_id  distance  probable_token  probable_token_id      p
    # 0          " the"                 3     4.102          " Paris"               912  0.231
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from geomlens.backend import view_of
from geomlens.data.inputs import as_sequences
from geomlens.data.token_map import token_map
from geomlens.errors import InputError
from geomlens.geometry.distances import distances

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

#: the columns of `nearest_vs_probable`, in order
COLUMNS = ("nearest_token", "nearest_token_id", "distance", "probable_token", "probable_token_id", "p")


@torch.no_grad()
def head_input_and_probs(
    model: HookedTransformer, tokens: Any, *, pos: int = -1
) -> tuple[Float[Tensor, "d_model"], Float[Tensor, "d_vocab"]]:
    """``unembed.hook_in`` and softmax(logits) of one position of one context (float32, CPU)."""
    seqs = as_sequences(model, tokens, where="nearest_vs_probable")
    if len(seqs) != 1:
        raise InputError(f"nearest_vs_probable: give one context, not {len(seqs)}.")
    seq = seqs[0]
    if not -len(seq) <= pos < len(seq):
        raise InputError(f"nearest_vs_probable: pos {pos} is outside the context's {len(seq)} tokens.")
    device = view_of(model).W_E.device
    logits, cache = model.run_with_cache(seq[None].to(device), names_filter="unembed.hook_in")
    h = cache["unembed.hook_in"][0, pos].float().cpu()
    return h, torch.softmax(logits[0, pos].float().cpu(), dim=-1)


def nearest_vs_probable(model: HookedTransformer, tokens: Any, *, pos: int = -1, n: int = 8) -> pd.DataFrame:
    """The ``n`` nearest ``W_E`` rows of ``unembed.hook_in`` beside the ``n`` most probable next
    tokens, at position ``pos`` of one context (a text or token ids, `geomlens.data.inputs`).

    Columns `COLUMNS`: token text (`geomlens.data.token_map`, ``<oov>`` for a reduced
    vocabulary's OOV id) with its model id; ``distance`` = ‖h − e_v‖; ``p`` = softmax
    probability. Ties keep the lower id first (a stable sort).
    """
    h, probs = head_input_and_probs(model, tokens, pos=pos)
    W_E = view_of(model).W_E.detach().float().cpu()
    n = min(n, W_E.shape[0])
    d = distances(h[None], W_E)[0]
    near = torch.sort(d, stable=True).indices[:n]
    top = torch.sort(probs, descending=True, stable=True).indices[:n]
    labels = token_map(model).labels
    return pd.DataFrame({
        "nearest_token": labels(near), "nearest_token_id": near.numpy(), "distance": d[near].numpy(),
        "probable_token": labels(top), "probable_token_id": top.numpy(), "p": probs[top].numpy()})
