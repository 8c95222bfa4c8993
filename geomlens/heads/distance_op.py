"""The fused distance op: ``out = b ± a·c·φ(‖h − e_v‖²)`` (see `geomlens.heads.distance` for
the maths and the readable reference) as one custom autograd op without a [batch, pos, d_vocab,
d_model] tensor, with a hand-written backward.

Cost model. The op does the linear head's three matmuls ([n_positions, d_model] x [d_model,
d_vocab] and the two backward products, in the same shapes) plus as few [n_positions, d_vocab]
passes and, on the CPU, as few *fresh* [n_positions, d_vocab] tensors as possible: a fresh
200 MB tensor costs the OS's page faults on first touch and an unmap on free, several times a
pass over warm memory.

Forward: the shared `geomlens.geometry.distances.sq_distance_block` (one broadcast add and one
``addmm_``, no clamp), then one elementwise epilogue that clamps, takes the root and applies the
head's transform. For φ = s it writes the logits over s (the backward needs no [n_positions,
d_vocab] tensor); for φ = sqrt it writes a new logits tensor and keeps s, which on the CPU comes
from, and goes back to, the op's own small pool (`_BufferPool`).

Backward, written by hand from ∂L/∂out = g (∂s/∂h = 2(h − e), ∂s/∂e = 2(e − h)):

    q = 2·∂L/∂s = ±2·g·a·c·φ'(s)       ∂L/∂h = h·Σ_v q − q W_E      ∂L/∂W_E = W_E·Σ_t q − qᵀ h
    ∂L/∂a_t = ±Σ_v g c_v φ      ∂L/∂c_v = ±Σ_t g a_t φ      ∂L/∂b_v = Σ_t g

* φ = s: q = ±2·a_t·g·c_v is separable, so a and c are folded into the matmul operands and no
  [n_positions, d_vocab] pass is made at all (`_backward_squared`).
* φ = sqrt: one pass writes p = ±g·a/φ over s (q = p·c_v) and the row sums (`_root_rows_inplace`),
  then the two matmuls (`_backward_root`).

Column sums over positions ride along as extra rows of the second matmul (hᵀ g-shaped, where
BLAS takes them almost for free), and ∂L/∂c expands s by the matmul identity:
Σ_t p s = Σ_t p‖h‖² + ‖e‖² Σ_t p − 2 e·Σ_t p h. Autograd records none of the ~10 passes of the
composed formula; the gradients of a, c and b flow on through the head's own small softplus /
MLP graph. Rounding can make the identity slightly negative, so it is clamped; the gradient is
taken as if unclamped there (those points are rounding noise).

Backend. The elementwise steps (`_epilogue`, ...) are plain torch code, written once, and run
through the op's `geomlens.fused.Fused`: mode ``"compile"`` fuses each into one loop over
[n_positions, d_vocab]; ``"eager"`` runs them op by op (more passes; the same numbers up to the
last bit of a square root and the order of summation in the reductions); ``"auto"`` compiles
from `COMPILE_MIN_ELEMENTS` entries up and falls back to eager, once and with a warning, if
compilation fails. A `DistanceOp` is owned by one head (its ``backend``); nothing is global.
Inside a model under ``torch.compile`` the op is a graph break (`_apply`) and its steps run as
they would outside.

Precision: under CUDA autocast the op runs in float32 (``custom_fwd(cast_inputs=float32)``):
‖h‖² (≈ d_model after RMSNorm) is much larger than the differences between tokens, and a bf16
sum would round them away. The matmuls' own precision (float32, TF32, bf16 operands with float32
accumulation) is `geomlens.heads.matmul_precision`.
"""

from __future__ import annotations

import threading

import torch
from jaxtyping import Float
from torch import Tensor

from geomlens.fused import Fused, Mode
from geomlens.geometry import distances as vocab_distances
from geomlens.heads import matmul_precision as mp

COMPILE_MIN_ELEMENTS = 1 << 18
"""``auto`` compiles the elementwise steps from this many [n_positions, d_vocab] entries up
(below it the launch and guard overhead of a compiled call outweighs the saved passes)."""

RECOMPILE_LIMIT = 64
"""Compiled variants allowed per elementwise step (one per combination of optional inputs,
flags and static/dynamic shapes: more than dynamo's default of 8 when many heads share a
process); set for the duration of a step's call only (`geomlens.fused.Fused`)."""


# -- reused [n_positions, d_vocab] buffers (CPU) ----------------------------------------------
class _BufferPool:
    """Free buffers for s, the op's internal [n_positions, d_vocab] temporary, on the CPU.

    A fresh tensor of that size costs more than a pass over it: the OS maps and zeroes its pages
    on first touch and unmaps them on free (≈90 ms for 1024 x 49152 floats on one core, against
    ≈10 ms for one pass over warm memory). s lives from the forward to the end of the backward
    and never leaves the op, so the backward gives it back here and the next forward takes it.
    At most `MAX_FREE` buffers are kept (one [n_positions, d_vocab] buffer between training
    steps). Each `DistanceOp` (each head) has its own pool. CUDA has its own caching allocator
    and is not pooled.
    """

    MAX_FREE = 2

    def __init__(self) -> None:
        self._free: list[Tensor] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, int], like: Tensor) -> Tensor:
        if like.device.type != "cpu" or torch.compiler.is_compiling():
            return like.new_empty(shape)
        with self._lock:
            for i, buf in enumerate(self._free):
                if buf.shape == shape and buf.dtype == like.dtype:
                    return self._free.pop(i)
        return like.new_empty(shape)

    def give(self, buf: Tensor) -> None:
        if buf.device.type != "cpu" or torch.compiler.is_compiling():
            return
        with self._lock:
            self._free.insert(0, buf)
            del self._free[self.MAX_FREE:]


# -- the elementwise steps, written once --------------------------------------------------------
def _epilogue(
    s: Tensor, a: Tensor | None, c: Tensor | None, b: Tensor | None, squared: bool, eps: float,
    negate: bool,
) -> Tensor:
    """out = b ± a·c·φ(s), evaluated as ((±φ)·c)·a + b."""
    out = s.clamp_min(0.0) if squared else s.clamp_min(eps).sqrt()
    if negate:
        out = out.neg()
    if c is not None:
        out = out * c
    if a is not None:
        out = out * a
    if b is not None:
        out = out + b
    return out


def _epilogue_inplace(
    s: Tensor, a: Tensor | None, c: Tensor | None, b: Tensor | None, squared: bool, eps: float,
    negate: bool,
) -> None:
    """`_epilogue` written over ``s`` (compiled: one read-modify-write loop, no new tensor)."""
    s.copy_(_epilogue(s, a, c, b, squared, eps, negate))


def _root_rows_inplace(
    g: Tensor, s: Tensor, a: Tensor | None, c: Tensor | None, eps: float, negate: bool,
    need_rows: bool, need_a: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """φ = sqrt(s): writes p = ±g·a/φ (q = p·c_v without its column factor) over ``s``;
    returns Σ_v q and ∂L/∂a = ±Σ_v g·c·φ (compiled: one loop per row; the reductions read the
    row again from cache)."""
    phi = s.clamp_min(eps).sqrt()
    p = g / phi
    if a is not None:
        p = p * a
    if negate:
        p = p.neg()
    q_rows = grad_a = None
    if need_rows:
        q_rows = (p * c if c is not None else p).sum(-1, keepdim=True)
    if need_a:
        gc = g * c if c is not None else g
        grad_a = (gc * phi).sum(-1, keepdim=True)
        grad_a = grad_a.neg() if negate else grad_a
    s.copy_(p)
    return q_rows, grad_a


def _grad_E_and_c(
    W_E: Tensor, M: Tensor, k1: Tensor, k2: Tensor | None, e_sq: Tensor, c: Tensor | None,
    scale: float, sign: float, need_E: bool, need_c: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """From the second matmul: ∂L/∂W_E = scale·c·(W_E·Σ_t − M) and ∂L/∂c = sign·(Σ_t‖h‖² +
    ‖e‖²·Σ_t − 2 e·M) (M [d_vocab, d_model] is a transposed view: compiled, one tiled pass)."""
    grad_E = grad_c = None
    if need_E:
        grad_E = (W_E * k1.unsqueeze(-1) - M) * (scale * c.unsqueeze(-1) if c is not None else scale)
    if need_c:
        grad_c = (k2 + e_sq * k1 - 2.0 * (W_E * M).sum(-1)) * sign
    return grad_E, grad_c


# -- the backward: everything separable goes into the two matmuls -----------------------------
# Their shapes are the linear head's (g W_U: [n_positions, d_vocab] x [d_vocab, d_model], and
# hᵀ g: [d_model, n_positions] x [n_positions, d_vocab]): BLAS runs [n_positions, d_model + 1]
# outputs far slower than [n_positions, d_model], but takes extra rows of hᵀ g (column sums
# over positions) almost for free.
def _rowdot(x: Tensor, y: Tensor) -> Tensor:
    return (x * y).sum(-1)


def _left_rows(h: Tensor, a: Tensor | None, h_sq: Tensor, *, sq_row: bool, ones_row: bool) -> Tensor:
    """[(a h)ᵀ; aᵀ; (a‖h‖²)ᵀ if sq_row; 1ᵀ if ones_row]: the left operand of the second matmul,
    whose product with g gives Σ_t g a h_t, Σ_t g a, Σ_t g a ‖h_t‖² and Σ_t g per token."""
    ones = h.new_ones(1, h.shape[0])
    av = a.T if a is not None else ones
    rows = [(h * a).T if a is not None else h.T, av]
    if sq_row:
        rows.append(av * h_sq.T)
    if ones_row:
        rows.append(ones)
    return torch.cat(rows, dim=0)


def _backward_squared(fused: Fused, g, h, W_E, h_sq, e_sq, a, c, sign: float, need):
    """φ = s: q = 2·sign·a_t·g·c_v is separable, so no [n_positions, d_vocab] tensor is made.

    a and c are folded into the matmul operands; the column sums ride along as extra rows of
    the second matmul, and ∂L/∂a, ∂L/∂c expand s by the matmul identity
    (Σ g c s = ‖h‖² Σ g c + Σ g c ‖e‖² − 2 h·Σ g c e); the row sums are matrix-vector products."""
    need_h, need_E, need_a, need_c, need_b = need
    d_model = h.shape[1]
    grad_h = grad_E = grad_a = grad_c = grad_b = None
    if need_h or need_a:
        P = mp.matmul(g, W_E * c.unsqueeze(-1) if c is not None else W_E)  # Σ_v g c e_v
        r1 = (g @ c if c is not None else g.sum(-1)).unsqueeze(-1)  # Σ_v g c
        if need_h:
            grad_h = (h * r1 - P) * (2.0 * sign if a is None else 2.0 * sign * a)
        if need_a:
            r2 = (g @ (c * e_sq if c is not None else e_sq)).unsqueeze(-1)  # Σ_v g c ‖e‖²
            grad_a = (h_sq * r1 + r2 - 2.0 * _rowdot(h, P).unsqueeze(-1)) * sign
    if need_E or need_c or need_b:
        out = mp.left_product(_left_rows(h, a, h_sq, sq_row=need_c,
                                         ones_row=need_b and a is not None), g, d_model)
        Q, k1 = out[:d_model].T, out[d_model]  # Σ_t g a h_t, Σ_t g a
        grad_E, grad_c = fused(_grad_E_and_c, W_E, Q, k1, out[d_model + 1] if need_c else None,
                               e_sq, c, 2.0 * sign, sign, need_E, need_c, n_elements=g.numel())
        if need_b:
            grad_b = out[-1] if a is not None else k1
    return grad_h, grad_E, grad_a, grad_c, grad_b


def _backward_root(fused: Fused, g, s, h, W_E, h_sq, e_sq, a, c, eps: float, negate: bool,
                   need):
    """φ = sqrt(s): one pass over [n_positions, d_vocab] writes p = ±g·a/φ (q = p·c_v) over s
    and gives Σ_v q and ∂L/∂a; c goes into the first matmul's operand, Σ_t p and
    ∂L/∂c = Σ_t p·s (s expanded by the matmul identity) ride along as rows of the second."""
    need_h, need_E, need_a, need_c, need_b = need
    d_model = h.shape[1]
    q_rows, grad_a = fused(_root_rows_inplace, g, s, a, c, eps, negate, need_h, need_a,
                           n_elements=s.numel())
    p = s
    grad_h = grad_E = grad_c = grad_b = None
    if need_h:
        grad_h = mp.addmm_neg(h * q_rows, p, W_E * c.unsqueeze(-1) if c is not None else W_E)
    if need_E or need_c:
        out = mp.left_product(_left_rows(h, None, h_sq, sq_row=need_c, ones_row=False), p, d_model)
        M, k1 = out[:d_model].T, out[d_model]  # Σ_t p h_t, Σ_t p
        grad_E, grad_c = fused(_grad_E_and_c, W_E, M, k1, out[d_model + 1] if need_c else None,
                               e_sq, c, 1.0, 1.0, need_E, need_c, n_elements=p.numel())
    if need_b:
        grad_b = g.sum(0)
    return grad_h, grad_E, grad_a, grad_c, grad_b



class DistanceOp:
    """The fused op of one head: its backend (``mode`` of the elementwise steps) and its buffer
    pool. ``op(h, W_E, a, c, b, squared=..., negate=..., eps=...)`` gives b ± a·c·φ."""

    def __init__(self, mode: str = "auto") -> None:
        self.fused = Fused(mode, min_elements=COMPILE_MIN_ELEMENTS, fullgraph=True,
                           recompile_limit=RECOMPILE_LIMIT)
        self.pool = _BufferPool()

    @property
    def mode(self) -> Mode:
        return self.fused.mode

    def __call__(
        self, h: Float[Tensor, "batch pos d_model"], W_E: Float[Tensor, "d_vocab d_model"],
        a: Float[Tensor, "batch pos 1"] | None, c: Float[Tensor, "d_vocab"] | None,
        b: Float[Tensor, "d_vocab"] | None, *, squared: bool, negate: bool, eps: float,
    ) -> Float[Tensor, "batch pos d_vocab"]:
        return _apply(self, h, W_E, a, c, b, squared=squared, negate=negate, eps=eps)

    def __getstate__(self) -> dict:
        """Copies (deepcopy, pickle) keep the mode and start with an empty pool."""
        return {"fused": self.fused}

    def __setstate__(self, state: dict) -> None:
        self.fused, self.pool = state["fused"], _BufferPool()

    def __repr__(self) -> str:
        return f"DistanceOp(mode={self.mode!r})"


# -- the autograd op --------------------------------------------------------------------------
class _DistanceOpFn(torch.autograd.Function):
    """b ± a·c·φ(s). h is 2-D [n_positions, d_model]; a is [n_positions, 1]; c, b are [d_vocab]."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, h2d, W_E, a, c, b, op: DistanceOp, squared: bool, eps: float, negate: bool,
                backward: bool):
        h_sq = h2d.pow(2).sum(-1, keepdim=True)
        e_sq = vocab_distances.row_sq_norms(W_E) + (0.0 if squared else eps)
        ctx.save_for_backward(h2d, W_E, h_sq, e_sq, a, c)
        ctx.op, ctx.squared, ctx.eps, ctx.negate = op, squared, eps, negate
        if squared:  # the backward needs no [n_positions, d_vocab] tensor: s becomes the output
            s = mp.sq_distance(h2d, h_sq, W_E, e_sq)
            op.fused(_epilogue_inplace, s, a, c, b, squared, eps, negate, n_elements=s.numel())
            return s
        s = op.pool.take((h2d.shape[0], W_E.shape[0]), h2d)
        mp.sq_distance(h2d, h_sq, W_E, e_sq, out=s)  # clamp: below
        out = op.fused(_epilogue, s, a, c, b, squared, eps, negate, n_elements=s.numel())
        if backward:
            ctx.s = s  # an attribute, not a saved tensor: the backward overwrites it (see there)
        else:  # no graph (no_grad, or nothing requires grad): s is free again
            op.pool.give(s)
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g):
        h2d, W_E, h_sq, e_sq, a, c = ctx.saved_tensors
        need, op = ctx.needs_input_grad[:5], ctx.op
        g = g.contiguous()
        if ctx.squared:
            grads = _backward_squared(op.fused, g, h2d, W_E, h_sq, e_sq, a, c,
                                      -1.0 if ctx.negate else 1.0, need)
        else:
            # The first backward writes its [n_positions, d_vocab] temporary over s instead of a
            # new tensor; a second one (retain_graph=True, gradcheck) recomputes s.
            s = ctx.s if ctx.s is not None else mp.sq_distance(h2d, h_sq, W_E, e_sq)
            ctx.s = None
            grads = _backward_root(op.fused, g, s, h2d, W_E, h_sq, e_sq, a, c, ctx.eps,
                                   ctx.negate, need)
            op.pool.give(s)
        return (*grads, None, None, None, None, None)


# Dynamo never traces the op (its steps are fused by the op's own `Fused`): traced, the squared
# heads trained nothing on an H100 (loss flat at ln d_vocab, with or without autocast; eager,
# CPU inductor and the graph break were fine; cause not established).
@torch.compiler.disable
def _apply(op: DistanceOp, h, W_E, a, c, b, *, squared: bool, negate: bool, eps: float) -> Tensor:
    batch, pos, d_model = h.shape
    a = None if a is None else a.reshape(batch * pos, 1)
    backward = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (h, W_E, a, c, b))
    out = _DistanceOpFn.apply(h.reshape(batch * pos, d_model), W_E, a, c, b, op, squared, eps,
                              negate, backward)
    return out.reshape(batch, pos, -1)
