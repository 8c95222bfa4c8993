"""The maths of every KNN / kernel head: logits from the distances between the hidden states
and the rows of the model's own W_E.

    s[t, v] = ‖h_t − e_v‖² = ‖h‖² − 2 h·e_v + ‖e_v‖²          (the matmul identity)
    out[t, v] = b_v − a_t · c_v · φ(s[t, v])
    φ(s) = sqrt(max(s, 0) + SQRT_EPS)     (`distances`; heads neg_dist, sigma, linear_scale,
                                            hybrid, context_mlp)
    φ(s) = max(s, 0)                      (`sq_distances`; heads gaussian, sq_dist_bias)

with an optional per-position scale ``a`` (f(h)), per-token scale ``c`` (σ_v, 1/(2σ_v²)) and
per-token bias ``b``. `reference_distance_logits` is that formula in plain torch, autograd
through every step: the readable definition. The heads compute it with the fused op
(`geomlens.heads.distance_op.DistanceOp`: the same function, a hand-written backward, no
[batch, pos, d_vocab, d_model] tensor and as few [batch, pos, d_vocab] passes as possible);
tests hold the two equal.

A `DistanceHead` owns its op, and so its backend: ``head.backend = "eager"`` (or
``"compile"``, ``"auto"``, the default, or ``"reference"`` for the readable formula). The
environment variable ``GEOMLENS_HEADS_BACKEND`` sets the default of new heads.

``SQRT_EPS = 1e-6`` keeps the gradient finite when ``h`` equals an embedding row exactly
(``d/dx sqrt(x)`` is infinite at 0). The shift in ``d`` is at most 1e-3 (at d = 0) and below
1e-7 at the typical d ≈ sqrt(d_model) ≈ 11 of a micro model.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

from jaxtyping import Float
from torch import Tensor, nn

from geomlens.fused import MODES
from geomlens.heads.base import Head
from geomlens.heads.distance_op import DistanceOp

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformerConfig

SQRT_EPS = 1e-6
"""Added under the square root in `distances`; see the module docstring."""

Backend = Literal["reference", "auto", "compile", "eager"]
BACKENDS: tuple[Backend, ...] = ("reference", *MODES)
"""``reference``: `reference_distance_logits`; the others: the fused op's mode
(`geomlens.fused.Fused`)."""


def default_backend() -> Backend:
    """``$GEOMLENS_HEADS_BACKEND`` or ``auto``."""
    return os.environ.get("GEOMLENS_HEADS_BACKEND", "auto")  # type: ignore[return-value]


def reference_distance_logits(
    h: Float[Tensor, "batch pos d_model"],
    W_E: Float[Tensor, "d_vocab d_model"],
    *,
    squared: bool,
    row_scale: Float[Tensor, "batch pos 1"] | None = None,
    col_scale: Float[Tensor, "d_vocab"] | None = None,
    col_bias: Float[Tensor, "d_vocab"] | None = None,
) -> Float[Tensor, "batch pos d_vocab"]:
    """``col_bias − row_scale · col_scale · φ(‖h − e_v‖²)`` in plain torch (module docstring)."""
    h_sq = h.pow(2).sum(-1, keepdim=True)
    e_sq = W_E.pow(2).sum(-1)
    s = (h_sq + e_sq - 2.0 * (h @ W_E.T)).clamp_min(0.0)
    phi = s if squared else (s + SQRT_EPS).sqrt()
    out = -phi
    if col_scale is not None:
        out = out * col_scale
    if row_scale is not None:
        out = out * row_scale
    return out + col_bias if col_bias is not None else out


def distance_logits(
    h: Float[Tensor, "batch pos d_model"],
    W_E: Float[Tensor, "d_vocab d_model"],
    *,
    squared: bool,
    row_scale: Float[Tensor, "batch pos 1"] | None = None,
    col_scale: Float[Tensor, "d_vocab"] | None = None,
    col_bias: Float[Tensor, "d_vocab"] | None = None,
    op: DistanceOp | None = None,
) -> Float[Tensor, "batch pos d_vocab"]:
    """``col_bias − row_scale · col_scale · φ`` with φ = `distances` (or, with ``squared=True``,
    `sq_distances`), by the fused op ``op`` (default: a fresh one in the default mode). Omitted
    scales are 1, an omitted bias is 0; scales must be positive for a larger distance to mean a
    lower logit."""
    op = op or DistanceOp(_fused_mode(default_backend()))
    return op(h, W_E, row_scale, col_scale, col_bias, squared=squared, negate=True, eps=SQRT_EPS)


def sq_distances(
    h: Float[Tensor, "batch pos d_model"], W_E: Float[Tensor, "d_vocab d_model"]
) -> Float[Tensor, "batch pos d_vocab"]:
    """Squared Euclidean distances ‖h − e_v‖² (clamped ≥ 0) via the matmul identity."""
    op = DistanceOp(_fused_mode(default_backend()))
    return op(h, W_E, None, None, None, squared=True, negate=False, eps=SQRT_EPS)


def distances(
    h: Float[Tensor, "batch pos d_model"], W_E: Float[Tensor, "d_vocab d_model"]
) -> Float[Tensor, "batch pos d_vocab"]:
    """Euclidean distances sqrt(‖h − e_v‖² + SQRT_EPS), finite gradient at d = 0."""
    op = DistanceOp(_fused_mode(default_backend()))
    return op(h, W_E, None, None, None, squared=False, negate=False, eps=SQRT_EPS)


def _fused_mode(backend: str):
    return "auto" if backend == "reference" else backend


class DistanceHead(Head):
    """A head whose logits are `distance_logits`; subclasses give φ and the scales
    (`distance_logits` below). ``backend`` belongs to the head (module docstring)."""

    def __init__(self, cfg: HookedTransformerConfig, embed: nn.Module) -> None:
        super().__init__(cfg, embed)
        self.backend = default_backend()

    @property
    def backend(self) -> Backend:
        """How the head computes its logits: ``reference``, ``auto``, ``compile``, ``eager``."""
        return self._backend

    @backend.setter
    def backend(self, backend: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self._backend = backend
        self.distance_op = DistanceOp(_fused_mode(backend))

    def distance_logits(
        self, h: Float[Tensor, "batch pos d_model"], *, squared: bool,
        row_scale: Float[Tensor, "batch pos 1"] | None = None,
        col_scale: Float[Tensor, "d_vocab"] | None = None,
        col_bias: Float[Tensor, "d_vocab"] | None = None,
    ) -> Float[Tensor, "batch pos d_vocab"]:
        """This head's `distance_logits` against the shared W_E, on its backend."""
        scales = dict(row_scale=row_scale, col_scale=col_scale, col_bias=col_bias)
        if self.backend == "reference":
            return reference_distance_logits(h, self.W_E, squared=squared, **scales)
        return distance_logits(h, self.W_E, squared=squared, op=self.distance_op, **scales)

