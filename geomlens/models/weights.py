"""Whether a model's unembedding is its embedding transposed (W_U = W_E^T exactly), cached.

The answer decides the analysis path (W_U folds into W_E; the logits stand in for h·e), and
comparing two vocabulary-sized matrices costs ~80 ms on a CPU, so every caller asks
`weights_tied`, which compares once per model until either parameter is replaced or modified
in place (a new parameter object, or a changed version counter)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from geomlens.backend import view_of

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

_ATTR = "_geomlens_tied_cache"


def weights_tied(model: HookedTransformer) -> bool:
    """True when ``model.W_U`` equals ``model.W_E.T`` exactly (shape and every value)."""
    view = view_of(model)
    W_E, W_U = view.W_E, getattr(model, "W_U", None)
    if W_U is None or W_U.shape != W_E.T.shape:
        return False
    key = tuple((id(w), w.data_ptr(), w._version) for w in (W_E, W_U))
    cached = model.__dict__.get(_ATTR)
    if cached is not None and cached[0] == key:
        return cached[1]
    tied = bool(torch.equal(W_U.detach().float(), W_E.detach().T.float().to(W_U.device)))
    model.__dict__[_ATTR] = (key, tied)
    return tied
