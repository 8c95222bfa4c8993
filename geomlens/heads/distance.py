"""Distances from hidden states to every row of W_E, without a [batch, pos, d_vocab, d_model]
tensor.

    ‖h − e_v‖² = ‖h‖² − 2 h·e_v + ‖e_v‖²            (the matmul identity)

The cross term is one matmul; the norms are computed in float32 even under bf16 autocast, because
‖h‖² (≈ d_model after RMSNorm) is much larger than the differences between tokens and a bf16 sum
would round them away. Rounding can make the identity slightly negative, so it is clamped at 0.

``d = sqrt(d² + SQRT_EPS)`` keeps the gradient finite when ``h`` equals an embedding row exactly
(``d/dx sqrt(x)`` is infinite at 0). With ``SQRT_EPS = 1e-6`` the shift in ``d`` is at most 1e-3
(at d = 0) and below 1e-7 at the typical d ≈ sqrt(d_model) ≈ 11 of a micro model.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

SQRT_EPS = 1e-6
"""Added under the square root in `distances`; see the module docstring."""


def sq_distances(
    h: Float[Tensor, "batch pos d_model"], W_E: Float[Tensor, "d_vocab d_model"]
) -> Float[Tensor, "batch pos d_vocab"]:
    """Squared Euclidean distances ‖h − e_v‖² (float32, clamped ≥ 0) via the matmul identity."""
    cross = (h @ W_E.T).float()  # may run in bf16 under autocast; upcast before adding norms
    h32, e32 = h.float(), W_E.float()
    h_sq = (h32 * h32).sum(-1, keepdim=True)  # [batch pos 1]
    e_sq = (e32 * e32).sum(-1)  # [d_vocab]
    return (h_sq - 2.0 * cross + e_sq).clamp_min(0.0)


def safe_sqrt(x: Float[Tensor, "*shape"], eps: float = SQRT_EPS) -> Float[Tensor, "*shape"]:
    """``sqrt(x + eps)``: finite gradient at x = 0."""
    return torch.sqrt(x + eps)


def distances(
    h: Float[Tensor, "batch pos d_model"], W_E: Float[Tensor, "d_vocab d_model"]
) -> Float[Tensor, "batch pos d_vocab"]:
    """Euclidean distances ‖h − e_v‖ (float32) with a finite gradient at d = 0."""
    return safe_sqrt(sq_distances(h, W_E))


def softplus_inverse(y: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """x such that softplus(x) = y (y > 0); used to initialise softplus-parametrised scales."""
    return y + torch.log(-torch.expm1(-y))
