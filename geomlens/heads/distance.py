"""Distances from hidden states to every row of W_E, without a [batch, pos, d_vocab, d_model]
tensor.

    ‖h − e_v‖² = ‖h‖² − 2 h·e_v + ‖e_v‖²            (the matmul identity)

Both functions run as one custom autograd op (`_PairwiseDistance`): the forward is the shared
kernel `geomlens.geometry.distances.sq_distances` (one broadcast add and one ``addmm_`` over the
whole vocabulary, then in-place ops), and the backward is written by hand (one elementwise pass
and two matmuls, as for a linear head), instead of the ~12 passes over a [batch·pos, d_vocab]
tensor that autograd records for the formula. Rounding can make the identity slightly negative,
so it is clamped at 0 (the gradient is taken as if unclamped there: those points are rounding
noise).

Precision: under CUDA autocast the op runs in float32 (``custom_fwd(cast_inputs=float32)``):
‖h‖² (≈ d_model after RMSNorm) is much larger than the differences between tokens, and a bf16
sum would round them away.

``d = sqrt(d² + SQRT_EPS)`` keeps the gradient finite when ``h`` equals an embedding row exactly
(``d/dx sqrt(x)`` is infinite at 0). With ``SQRT_EPS = 1e-6`` the shift in ``d`` is at most 1e-3
(at d = 0) and below 1e-7 at the typical d ≈ sqrt(d_model) ≈ 11 of a micro model.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from geomlens.geometry import distances as vocab_distances

SQRT_EPS = 1e-6
"""Added under the square root in `distances`; see the module docstring."""


class _PairwiseDistance(torch.autograd.Function):
    """``squared``: max(‖h‖² − 2h·e + ‖e‖², 0); else sqrt(max(·, 0) + eps).

    h is 2-D: [batch·pos, d_model]."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, h2d: Tensor, W_E: Tensor, squared: bool, eps: float) -> Tensor:
        offset = 0.0 if squared else eps
        out = vocab_distances.sq_distances(h2d, W_E, shift=offset)  # max(d², 0) (+ eps)
        if not squared:
            out.sqrt_()
        ctx.save_for_backward(h2d, W_E, out)
        ctx.squared = squared
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: Tensor):
        h2d, W_E, out = ctx.saved_tensors
        # ∂(d²)/∂h = 2(h − e), ∂(d²)/∂e = 2(e − h); for d, ∂d/∂(d²) = 1/(2d) cancels the 2.
        q = 2.0 * grad if ctx.squared else grad / out
        grad_h = grad_E = None
        if ctx.needs_input_grad[0]:
            grad_h = h2d * q.sum(-1, keepdim=True) - q @ W_E
        if ctx.needs_input_grad[1]:
            grad_E = W_E * q.sum(0).unsqueeze(-1) - q.T @ h2d
        return grad_h, grad_E, None, None


def _pairwise(h: Tensor, W_E: Tensor, *, squared: bool) -> Tensor:
    batch, pos, d_model = h.shape
    out = _PairwiseDistance.apply(h.reshape(batch * pos, d_model), W_E, squared, SQRT_EPS)
    return out.reshape(batch, pos, -1)


def sq_distances(
    h: Float[Tensor, "batch pos d_model"], W_E: Float[Tensor, "d_vocab d_model"]
) -> Float[Tensor, "batch pos d_vocab"]:
    """Squared Euclidean distances ‖h − e_v‖² (clamped ≥ 0) via the matmul identity."""
    return _pairwise(h, W_E, squared=True)


def distances(
    h: Float[Tensor, "batch pos d_model"], W_E: Float[Tensor, "d_vocab d_model"]
) -> Float[Tensor, "batch pos d_vocab"]:
    """Euclidean distances sqrt(‖h − e_v‖² + SQRT_EPS), finite gradient at d = 0."""
    return _pairwise(h, W_E, squared=False)


def softplus_inverse(y: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """x such that softplus(x) = y (y > 0); used to initialise softplus-parametrised scales."""
    return y + torch.log(-torch.expm1(-y))
