"""The per-layer lenses (registry `LENSES`) and the scoring machinery they share.

Each lens scores every token v for a residual vector h (higher = ranked first):

    distance_raw       -‖h − W_E[v]‖                 (raw residual stream)
    distance_ln_final  -‖n(h) − W_E[v]‖              n(h) = ``ln_final`` normalisation of h without
                                                      its gain (`geomlens.geometry.lens.ln_final_normalized`)
    distance_ln_final_gain  -‖ln_final(h) − W_E[v]‖  gain included: at the last layer this is the
                                                      main table's ``ln_final`` hidden (unembed.hook_in)
    logit              unembed(ln_final(h))[v]        the logit lens (at the last layer = z)

The distance lenses rank by ``2 h·e − ‖e‖²`` (= ‖h‖² − ‖h − e‖², which orders each row exactly
like −‖h − e‖), from one matmul of the shared kernel `geomlens.geometry.distances.sq_distance_chunks`
(``relative=True``). The ln_final variant reuses it: every TransformerLens norm is affine per
row, n(h) = a·h + b·1 with a > 0, so n·e = a (h·e) + b Σ_j e_j and its scores are a rank-2
update of the raw ones (`affine_fit` checks this numerically; otherwise n gets its own matmul).
The logit lens needs its own matmul (`LensContext.W_U_rows`; ln_final's gain makes its matrix
differ from W_E); with tied embeddings distance_ln_final_gain comes from the logit lens's output
(x·e = logit − b_U; also when W_E is an exact positive multiple of W_U^T, as Gemma's folded
embedding scale makes it), otherwise ln_final(h) gets a third matmul.

`lens_slices` runs them over many layers at once: layers stacked so each matmul has up to
`PRODUCT_CELLS` rows (a CPU GEMM runs ~15% faster with 1,024 rows than 512, ~35% faster than
128), written into two score matrices reused by every matmul (a fresh 100 MB matrix costs its
page faults), then read in slices of about `POST_ENTRIES` entries, so every pass after the
matmul, and the derived lenses' scores, stay in cache. The layer lens
(`geomlens.analysis.layers`) and the explorer (`geomlens.explorer.compute`) both score with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from geomlens.backend import view_of
from geomlens.geometry.distances import row_sq_norms, sq_distance_chunks
from geomlens.geometry.lens import apply_ln_final, ln_final_normalized
from geomlens.models.weights import tie_scale
from geomlens.registry import Registry

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

PRODUCT_CELLS = 1024
"""(layer, position) rows per lens matmul at most."""
STACK_BUDGET = 1 << 26
"""[row, token] entries per score matrix at most (256 MiB float32): Gemma's 262,144 tokens get
256 rows per matmul."""
POST_ENTRIES = 1 << 21
"""Score entries per slice after a matmul (8 MiB: a slice's passes stay in cache)."""


@dataclass
class LensContext:
    """What every lens needs from the model, prepared once (float32, on the model's device)."""

    model: HookedTransformer
    W_E: Float[Tensor, "d_vocab d_model"]
    e_sq: Float[Tensor, "d_vocab"]
    """‖W_E[v]‖²."""
    e_sum: Float[Tensor, "d_vocab"]
    """Σ_j W_E[v, j] (what a per-row shift of h adds to h·e)."""
    tie_scale: float | None
    """c with W_E == c · W_U^T exactly (`tie_scale`; 1 = tied, None = untied): then
    x·W_E[v] = c (logit_v − b_U[v]) for x = ln_final(h)."""
    W_U_rows: Float[Tensor, "d_vocab_out d_model"]
    """W_U^T as contiguous rows: the logit lens's matmul x·W_U reads it like the distance
    kernel reads W_E (a [d_model, d_vocab] right operand runs ~10% slower on a CPU at Gemma's
    262,144 tokens). A copy of W_U when W_U is not already such a transposed view."""
    b_U: Float[Tensor, "d_vocab_out"]

    @classmethod
    def of(cls, model: HookedTransformer) -> LensContext:
        """The context of ``model``; ‖W_E[v]‖², Σ_j W_E[v, j] and W_U's rows are kept on the
        model until W_E or W_U is replaced or modified in place (a vocabulary pass each: ~0.2 s
        for Gemma's)."""
        view = view_of(model)
        key = tuple((id(w), w.data_ptr(), w._version) for w in (view.W_E, view.W_U))
        cached = model.__dict__.get(_CONTEXT_ATTR)
        if cached is None or cached[0] != key:
            W_E = view.W_E.detach().float()
            W_U_rows = view.W_U.detach().float().T.contiguous()
            cached = (key, W_E, row_sq_norms(W_E), W_E.sum(-1), W_U_rows)
            model.__dict__[_CONTEXT_ATTR] = cached
        _, W_E, e_sq, e_sum, W_U_rows = cached
        return cls(model=model, W_E=W_E, e_sq=e_sq, e_sum=e_sum, tie_scale=tie_scale(model),
                   W_U_rows=W_U_rows, b_U=view.b_U.detach().float())


_CONTEXT_ATTR = "_geomlens_lens_context"


AFFINE_TOL = 1e-4
"""n(h) counts as affine in h (a·h + b·1 per row) when the fit's largest error is below this
fraction of max |n(h)| (every TransformerLens norm is: LN, LNPre, RMS, RMSPre)."""


@dataclass
class LayerInputs:
    """One layer's residual vectors and the score matrices its lenses share (each computed once,
    for all rows; `rows` gives a slice that reads them)."""

    ctx: LensContext
    h: Float[Tensor, "n_positions d_model"]
    buffers: dict[str, Tensor] = field(default_factory=dict, repr=False)
    """Preallocated [>= n_positions, d_vocab] matrices to write the shared matrices ``"raw"``
    and ``"logits"`` into (reused across layers: a fresh 100 MB matrix costs its page faults)."""
    _memo: dict[str, Tensor] = field(default_factory=dict, repr=False)
    _parent: LayerInputs | None = field(default=None, repr=False)
    _span: slice = field(default_factory=lambda: slice(None), repr=False)

    def rows(self, start: int, stop: int) -> LayerInputs:
        """The same layer at rows ``start..stop-1``: its shared matrices are row slices of this
        one's (computed on first need for every row, so a matmul is never split)."""
        return LayerInputs(self.ctx, self.h[start:stop], _parent=self, _span=slice(start, stop))

    def whole(self, key: str, fn: Callable[[LayerInputs, Tensor | None], Tensor]) -> Tensor:
        """``fn(layer, out)`` [n_positions, ...] computed once for the whole layer (memo ``key``;
        ``out``: the first n_positions rows of ``buffers[key]``, or None) and sliced to these
        rows."""
        if self._parent is not None:
            return self._parent.whole(key, fn)[self._span]
        if key not in self._memo:
            buf = self.buffers.get(key)
            self._memo[key] = fn(self, None if buf is None else buf[:self.h.shape[0]])
        return self._memo[key]

    def raw_scores(self) -> Float[Tensor, "n_positions d_vocab"]:
        """``2 h·e − ‖e‖²`` (= ‖h‖² − ‖h − e‖²) for every token: one matmul of the shared
        distance kernel (``relative=True``), negated in place; computed once."""
        return self.whole("raw", _raw_matmul)

    def ln_final_out(self) -> Float[Tensor, "n_positions d_model"]:
        """``ln_final(h)``, gain included (= ``unembed.hook_in`` at the last layer)."""
        return self.whole("ln_final_out",
                          lambda whole, _: apply_ln_final(whole.ctx.model, whole.h[None])[0].float())

    def ln_final_normalized(self) -> Float[Tensor, "n_positions d_model"]:
        """n(h): ``ln_final``'s normalisation without its gain (`ln_final_normalized`)."""
        return self.whole("ln_final_normalized", lambda whole, _: ln_final_normalized(
            whole.ctx.model, whole.h[None])[0].float())

    def lens_logits(self) -> Float[Tensor, "n_positions d_vocab"]:
        """The logit lens ``unembed(ln_final(h))``: one matmul; computed once."""
        return self.whole("logits", _logits_matmul)


def _raw_matmul(layer: LayerInputs, out: Tensor | None) -> Tensor:
    raw = layer.h.new_empty(layer.h.shape[0], layer.ctx.W_E.shape[0]) if out is None else out
    for _ in sq_distance_chunks(layer.h, layer.ctx.W_E, targets_sq=layer.ctx.e_sq,
                                relative=True, out=raw):
        pass
    return raw.neg_()


def _logits_matmul(layer: LayerInputs, out: Tensor | None) -> Tensor:
    """``ln_final(h) · W_U + b_U`` (= `geomlens.geometry.lens.logit_chunks`' value)."""
    ctx = layer.ctx
    return torch.addmm(ctx.b_U[None], layer.ln_final_out(), ctx.W_U_rows.T, out=out)


def affine_fit(
    h: Float[Tensor, "n_positions d_model"], x: Float[Tensor, "n_positions d_model"]
) -> tuple[Float[Tensor, "n_positions 1"], Float[Tensor, "n_positions 1"]] | None:
    """``(a, b)`` with ``x = a·h + b`` per row (least squares), or None when that does not hold
    to `AFFINE_TOL` for every row (then x needs its own matmul)."""
    hc = h - h.mean(-1, keepdim=True)
    a = (hc * (x - x.mean(-1, keepdim=True))).sum(-1, keepdim=True) / hc.pow(2).sum(-1, keepdim=True)
    b = x.mean(-1, keepdim=True) - a * h.mean(-1, keepdim=True)
    err = (x - (a * h + b)).abs().amax(-1)
    ok = torch.isfinite(err) & (err <= AFFINE_TOL * x.abs().amax(-1).clamp_min(1e-30)) \
        & (a[:, 0] > 0)
    return (a, b) if bool(ok.all()) else None


LensFn = Callable[[LayerInputs], Float[Tensor, "n_positions d_vocab"]]
LENSES: Registry[LensFn] = Registry("lens")
"""Per-layer lenses by name: fn(layer inputs) -> a score per token (higher = ranked first)."""


def _distance_raw(layer: LayerInputs) -> Tensor:
    """2 h·e − ‖e‖² (= ‖h‖² − ‖h − e‖²: ranks like −‖h − e‖)."""
    return layer.raw_scores()


def _distance_ln_final(layer: LayerInputs) -> Tensor:
    """The raw scores of n = n(h). When n = a·h + b (`affine_fit`, a > 0), n·e = a h·e + b Σ_j e_j
    and 2 n·e − ‖e‖², divided by a (a per-row positive scale: the same ranking and the same
    NDCG), is  raw + (1 − 1/a) ‖e‖² + (2b/a) Σ_j e_j : one rank-2 update of the raw scores.
    Otherwise n gets its own matmul."""
    ctx = layer.ctx
    n = layer.ln_final_normalized()
    fit = affine_fit(layer.h, n)
    if fit is None:  # the whole layer's n gets its own matmul (this slice's rows of it)
        return layer.whole("ln_final_raw",
                           lambda whole, _: LayerInputs(ctx, whole.ln_final_normalized()).raw_scores())
    a, b = fit
    coef = torch.cat([1.0 - 1.0 / a, 2.0 * b / a], dim=-1)  # [n_positions 2]
    return torch.addmm(layer.raw_scores(), coef, torch.stack([ctx.e_sq, ctx.e_sum]))


def _distance_ln_final_gain(layer: LayerInputs) -> Tensor:
    """The raw scores of x = ln_final(h). With W_E = c W_U^T (`LensContext.tie_scale`; c = 1:
    tied) x·e = c (logit − b_U), so (2 x·e − ‖e‖²) / 2c = logit − b_U − ‖e‖²/2c (a positive
    scale: the same ranking) comes from the logit lens without a matmul; otherwise x gets its
    own."""
    ctx = layer.ctx
    if ctx.tie_scale is None:
        return layer.whole("ln_final_gain_raw",
                           lambda whole, _: LayerInputs(ctx, whole.ln_final_out()).raw_scores())
    shift = ctx.b_U + ctx.e_sq / (2.0 * ctx.tie_scale)
    return layer.lens_logits() - shift


def _logit(layer: LayerInputs) -> Tensor:
    return layer.lens_logits()


LENSES.register("distance_raw", _distance_raw, help="-||h - W_E[v]||, h = raw residual stream")
LENSES.register("distance_ln_final", _distance_ln_final,
                help="-||n(h) - W_E[v]||, n = ln_final's normalisation without its gain")
LENSES.register("distance_ln_final_gain", _distance_ln_final_gain,
                help="-||ln_final(h) - W_E[v]||, gain included (at the last layer: the "
                     "ln_final hidden of the main table)")
LENSES.register("logit", _logit, help="unembed(ln_final(h))[v] (the logit lens)")


def product_cells(d_vocab: int, budget: int = STACK_BUDGET) -> int:
    """Rows per lens matmul for a vocabulary of ``d_vocab`` tokens."""
    return max(1, min(PRODUCT_CELLS, budget // d_vocab))


def score_buffers(ctx: LensContext, n_pos: int, n_layers: int, cells: int) -> dict[str, Tensor]:
    """The two reusable score matrices of `lens_slices` for blocks of ``n_pos`` positions."""
    rows = min(n_layers, max(1, cells // n_pos)) * n_pos
    return {k: ctx.W_E.new_empty(rows, ctx.W_E.shape[0]) for k in ("raw", "logits")}


def lens_slices(
    ctx: LensContext, resid: Float[Tensor, "layer n_pos d_model"], lenses: Sequence[str], *,
    cells: int, post_entries: int | None = POST_ENTRIES, buffers: dict[str, Tensor] | None = None,
) -> Iterator[tuple[int, str, int, int, Tensor, LayerInputs]]:
    """``(layer index, lens, a, b, scores, inputs)`` for every layer, lens and slice
    ``a..b-1`` of the positions: the lens's scores there [b − a, d_vocab] and that slice's
    `LayerInputs`. Layers are stacked so each matmul has up to ``cells`` rows (module doc);
    ``buffers`` (`score_buffers`, made here if None) hold the matmuls, so a slice's scores are
    valid until the next group of layers. Order: group, lens, layer, slice."""
    n_layers, n_pos, _ = resid.shape
    if buffers is None or buffers["raw"].shape[0] < n_pos:
        buffers = score_buffers(ctx, n_pos, n_layers, cells)
    per = max(1, min(cells, buffers["raw"].shape[0]) // n_pos)
    step = n_pos if post_entries is None else max(1, min(n_pos, post_entries // ctx.W_E.shape[0]))
    fns = [(lens, LENSES.get(lens)) for lens in lenses]
    for g0 in range(0, n_layers, per):
        group = range(g0, min(n_layers, g0 + per))
        stacked = LayerInputs(ctx, resid[g0:group.stop].reshape(-1, resid.shape[-1]).float(),
                              buffers=buffers)
        for lens, fn in fns:
            for j, i in enumerate(group):
                for a in range(0, n_pos, step):
                    b = min(n_pos, a + step)
                    rows = stacked.rows(j * n_pos + a, j * n_pos + b)
                    yield i, lens, a, b, fn(rows), rows
