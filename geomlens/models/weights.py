"""Whether a model's unembedding is its embedding transposed (W_U = W_E^T exactly, or a positive
multiple of it: `tie_scale`), cached.

The answer decides the analysis path (W_U folds into W_E; the logits stand in for h·e), and
comparing two vocabulary-sized matrices costs ~80 ms on a CPU, so every caller asks
`weights_tied` / `tie_scale`, which compares once per model until either parameter is replaced or modified
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
    return tie_scale(model) == 1.0


def tie_scale(model: HookedTransformer) -> float | None:
    """The c > 0 with ``W_E == c · W_U.T`` exactly in float32 (every value), or None.

    c = 1 is tied weights. Gemma's loader folds the sqrt(d_model) embedding scale into W_E, so a
    tied Gemma has c = float32(sqrt(d_model)) and x·W_E[v] = c · (x·W_U[:, v]): one matmul serves
    both (`geomlens.analysis.layers`)."""
    view = view_of(model)
    W_E, W_U = view.W_E, getattr(model, "W_U", None)
    if W_U is None or W_U.shape != W_E.T.shape:
        return None
    key = tuple((id(w), w.data_ptr(), w._version) for w in (W_E, W_U))
    cached = model.__dict__.get(_ATTR)
    if cached is not None and cached[0] == key:
        return cached[1]
    model.__dict__[_ATTR] = (key, _scale(W_E.detach().T.float().to(W_U.device), W_U.detach().float()))
    return model.__dict__[_ATTR][1]


def _scale(E_T: torch.Tensor, U: torch.Tensor) -> float | None:
    if torch.equal(E_T, U):
        return 1.0
    at = int(U.abs().argmax())
    u = U.reshape(-1)[at]
    if u == 0:
        return None
    c = E_T.reshape(-1)[at] / u
    ok = bool(torch.isfinite(c)) and float(c) > 0 and torch.equal(E_T, U * c)
    return float(c) if ok else None
