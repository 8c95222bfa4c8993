"""The distance ranking along the trajectory: at every layer, how well does each lens rank the
vocabulary like the model's final next-token distribution p?

For a position with final logits z (p = softmax(z)) and residual stream h at layer l
(``layer = -1``: the embedding ``blocks.0.hook_resid_pre``; ``layer = l >= 0``:
``blocks.{l}.hook_resid_post``), each lens (registry `LENSES`) scores every token v:

    distance_raw       -‖h − W_E[v]‖                 (raw residual stream)
    distance_ln_final  -‖n(h) − W_E[v]‖              n(h) = ``ln_final`` normalisation of h without
                                                      its gain (`geomlens.geometry.lens.ln_final_normalized`)
    distance_ln_final_gain  -‖ln_final(h) − W_E[v]‖  gain included: at the last layer this is the
                                                      main table's ``ln_final`` hidden (unembed.hook_in)
    logit              unembed(ln_final(h))[v]        the logit lens (at the last layer = z)

and its ranking is compared with p by the analysis's own NDCG (`geomlens.analysis.agreement`:
`reference` + `rank_metrics`, gains = gain(p), top-K exact and NDCG@full bracketed with a
per-position error bound ``ndcg_full_err``; top1 and top10 come with it). The distance lenses
rank by ``2 h·e − ‖e‖²`` (= ‖h‖² − ‖h − e‖², which orders each row exactly like −‖h − e‖),
from one matmul of the shared kernel `geomlens.geometry.distances.sq_distance_chunks`
(``relative=True``). The ln_final variant reuses it: every TransformerLens norm is affine per
row, n(h) = a·h + b·1 with a > 0, so n·e = a (h·e) + b Σ_j e_j and its scores are a rank-2
update of the raw ones (`affine_fit` checks this numerically; otherwise n gets its own matmul).
The logit lens needs its own matmul (`LensContext.W_U_rows`; ln_final's gain
makes its matrix differ from W_E); with tied embeddings distance_ln_final_gain comes from the
logit lens's output (x·e = logit − b_U; also when W_E is an exact positive multiple of W_U^T, as
Gemma's folded embedding scale makes it), otherwise ln_final(h) gets a third matmul.

Cost: (n_layers + 1) × 2 (tied) or 3 matmuls of [positions, d_model] × [d_model, d_vocab], so the lens runs on
a seeded sample of positions (`sample_positions`), ``position_chunk`` positions at a time. The
activations come from the forward pass that computes the logits: `LayerLensCapture.hooks` adds
hooks that keep only the sampled rows of every layer, so `geomlens analyze` reuses its own
forward pass (no second pass) and `layer_ndcg` runs one pass on the tokens it is given.
Per-position values are reduced to per-segment means, then to a mean and a percentile bootstrap
CI over segments per (layer, lens, metric) by `geomlens.analysis.layer_summary`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.analysis.agreement import rank_metrics, reference
from geomlens.analysis.sampling import SEED_OFFSETS, rows_in_batch, sample_sorted
from geomlens.backend import view_of
from geomlens.data.batching import ValidPositions
from geomlens.data.inputs import TextInput, as_batch
from geomlens.errors import InputError
from geomlens.geometry.distances import row_sq_norms, sq_distance_chunks
from geomlens.geometry.lens import apply_ln_final, ln_final_normalized
from geomlens.models.weights import tie_scale
from geomlens.registry import Registry

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

EMBEDDING_LAYER = -1
"""The ``layer`` value of the embedding (``blocks.0.hook_resid_pre``)."""
VOCAB_BUDGET = 1 << 22
"""Default [position, token] entries scored at once (16 MiB per float32 matrix)."""
LAYER_LENS_KEYS = ("segment", "domain", "pos", "layer", "hook", "lens")


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

    @property
    def tied(self) -> bool:
        return self.tie_scale == 1.0

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
LensRows = tuple[Tensor, Tensor, tuple[np.ndarray, np.ndarray, np.ndarray]]
"""One batch's sampled rows: residual stream [layer, n, d_model], logits [n, d_vocab], and the
(segment, domain, pos) labels."""
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


def layer_hook_names(n_layers: int) -> dict[int, str]:
    """layer -> full hook name: -1 = ``blocks.0.hook_resid_pre``, l = ``blocks.{l}.hook_resid_post``."""
    return {EMBEDDING_LAYER: "blocks.0.hook_resid_pre",
            **{layer: f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)}}


def sample_positions(n_positions: int, n_sample: int | None, *, seed: int) -> Int[Tensor, "n_sample"]:
    """Sorted stream indices of ``n_sample`` positions drawn uniformly without replacement from
    ``range(n_positions)`` (torch generator seeded by ``seed``); all of them when ``n_sample`` is
    None or >= ``n_positions``."""
    return sample_sorted(n_positions, n_sample, torch.Generator().manual_seed(seed))


@torch.no_grad()
def lens_metrics(
    ctx: LensContext,
    resid: Float[Tensor, "layer n_positions d_model"],
    logits: Float[Tensor, "n_positions d_vocab"],
    *,
    ks: Sequence[int | None],
    topk: int,
    gain: str,
    lenses: Sequence[str],
) -> dict[tuple[int, str], dict[str, Float[Tensor, "n_positions"]]]:
    """(layer index into ``resid``, lens) -> metric -> one value per position, for one chunk
    of positions: one `reference` of p shared by every layer and lens, then per layer and lens
    one score matrix and one `rank_metrics` (the analysis's NDCG)."""
    ref = reference(logits.float(), topk=max(topk, *(k for k in ks if k is not None)), gain=gain)
    out = {}
    for i in range(resid.shape[0]):
        layer = LayerInputs(ctx, resid[i].float())
        for lens in lenses:
            scores = LENSES.get(lens)(layer)
            out[i, lens] = rank_metrics(scores, ref, ks=list(ks), spearman=False)
    return out


@dataclass
class LayerLensCapture:
    """Collects the sampled positions' residual stream at every layer from forward passes the
    caller runs (`hooks` before a batch's pass, `add` after it) and scores them in chunks of
    ``position_chunk`` positions; `frame` returns the per-position table."""

    model: HookedTransformer
    sampled: Int[Tensor, "n_sample"]
    """Sorted stream indices (positions in (sequence, position) order over all batches)."""
    ks: tuple[int | None, ...] = (10, None)
    topk: int = 256
    """K of the NDCG: ranks 1..K exact, NDCG@full bracketed beyond."""
    gain: str = "exp2"
    lenses: tuple[str, ...] = ("distance_raw", "distance_ln_final", "distance_ln_final_gain",
                               "logit")
    position_chunk: int | None = None
    """Positions scored at once (None: ~`VOCAB_BUDGET` / d_vocab)."""
    _rows: Tensor | None = field(default=None, repr=False)
    _pending: dict[str, Tensor] = field(default_factory=dict, repr=False)
    _buffer: list[tuple] = field(default_factory=list, repr=False)
    _frames: list[pd.DataFrame] = field(default_factory=list, repr=False)

    @classmethod
    def from_config(cls, model: HookedTransformer, cfg, n_positions: int) -> LayerLensCapture:
        """The capture `geomlens analyze` runs (``cfg``: an `AnalyzeConfig`)."""
        return cls(model=model, sampled=sample_positions(
            n_positions, cfg.layer_lens_positions, seed=cfg.seed + SEED_OFFSETS["layer_lens"]),
            topk=max(cfg.topk_exact, 10), gain=cfg.gain)

    @property
    def hook_names(self) -> dict[int, str]:
        return layer_hook_names(self.model.cfg.n_layers)

    def hooks(self, tokens: Int[Tensor, "batch pos"], lengths: Int[Tensor, "batch"],
              offset: int) -> list[tuple[str, Callable]]:
        """Hooks that keep the sampled rows of this batch (its valid positions are the stream
        indices ``offset ..``) at every layer; [] when none is sampled."""
        valid = ValidPositions.of(tokens, lengths.to(tokens.device))
        self._rows = rows_in_batch(self.sampled, offset, len(valid.pos), tokens.device)
        self._pending = {}
        if not len(self._rows):
            return []
        at = (valid.batch_idx[self._rows], valid.pos[self._rows])

        def keep(tensor: Tensor, *, hook, name: str) -> Tensor:
            # keyed by the name asked for (TransformerLens 4 passes the canonical hook)
            self._pending[name] = tensor[at].detach().float()
            return tensor

        return [(name, partial(keep, name=name)) for name in self.hook_names.values()]

    def add(self, logits: Float[Tensor, "n_positions d_vocab"], segments: Sequence[str],
            domains: Sequence[str], pos: Sequence[int] | np.ndarray) -> None:
        """After the batch's forward pass: its logits and labels at every valid position."""
        rows = self.take_rows(logits, segments, domains, pos)
        if rows is not None:
            self.add_rows(rows)

    def take_rows(self, logits: Float[Tensor, "n_positions d_vocab"], segments: Sequence[str],
                  domains: Sequence[str], pos: Sequence[int] | np.ndarray) -> LensRows | None:
        """The sampled rows of the batch whose hooks ran last: residual stream, logits, labels
        (None when none is sampled); `add_rows` scores them."""
        if self._rows is None or not len(self._rows):
            return None
        rows = self._rows.cpu().numpy()
        resid = torch.stack([self._pending.pop(name) for name in self.hook_names.values()])
        labels = (np.asarray(segments, dtype=object)[rows], np.asarray(domains, dtype=object)[rows],
                  np.asarray(pos)[rows])
        out = (resid, logits[self._rows].float(), labels)
        self._rows = None
        return out

    def add_rows(self, rows: LensRows) -> None:
        """Buffer one batch's sampled rows (in stream order) and score full chunks of them."""
        device = view_of(self.model).W_E.device
        resid, logits, labels = rows
        self._buffer.append((resid.to(device), logits.to(device), labels))
        if sum(len(b[0][0]) for b in self._buffer) >= self._chunk():
            self._flush()

    def frame(self) -> pd.DataFrame:
        """One row per (sampled position, layer, lens), columns `LAYER_LENS_KEYS` + the metrics,
        ordered by layer, lens (as in ``lenses``), then stream position (whatever the chunks)."""
        self._flush()
        if not self._frames:
            return pd.DataFrame(columns=list(LAYER_LENS_KEYS))
        df = pd.concat(self._frames, ignore_index=True)
        lens_code = df["lens"].map({name: i for i, name in enumerate(self.lenses)})
        order = np.lexsort((lens_code.to_numpy(), df["layer"].to_numpy()))  # stable
        return df.iloc[order].reset_index(drop=True)

    def _chunk(self) -> int:
        if self.position_chunk is not None:
            return max(1, self.position_chunk)
        return max(1, VOCAB_BUDGET // self.model.cfg.d_vocab_out)

    def _flush(self) -> None:
        if not self._buffer:
            return
        resid = torch.cat([b[0] for b in self._buffer], dim=1)
        logits = torch.cat([b[1] for b in self._buffer])
        labels = [np.concatenate([b[2][j] for b in self._buffer]) for j in range(3)]
        self._buffer = []
        ctx = LensContext.of(self.model)
        step = self._chunk()
        for start in range(0, len(logits), step):
            part = slice(start, start + step)
            metrics = lens_metrics(ctx, resid[:, part], logits[part], ks=self.ks,
                                   topk=self.topk, gain=self.gain, lenses=self.lenses)
            self._frames.append(self._rows_frame(metrics, [lab[part] for lab in labels]))

    def _rows_frame(self, metrics: dict, labels: list[np.ndarray]) -> pd.DataFrame:
        segments, domains, pos = labels
        hooks = list(self.hook_names.items())
        frames = []
        for (i, lens), values in metrics.items():
            layer, hook = hooks[i]
            cols = {"segment": segments, "domain": domains, "pos": pos, "layer": layer,
                    "hook": hook, "lens": lens}
            cols.update({m: v.double().cpu().numpy() for m, v in values.items()})
            frames.append(pd.DataFrame(cols))
        return pd.concat(frames, ignore_index=True)


@torch.no_grad()
def layer_ndcg(
    model: HookedTransformer,
    tokens: TextInput,
    lengths: Int[Tensor, "batch"] | None = None,
    *,
    ks: Sequence[int | None] = (10, None),
    positions: int | None = 256,
    seed: int = 0,
    topk: int = 256,
    gain: str = "exp2",
    lenses: Sequence[str] | None = None,
    segment_ids: Sequence[str] | None = None,
    position_chunk: int | None = None,
) -> pd.DataFrame:
    """Per-position NDCG of every lens at every layer against the model's own p, from one
    forward pass over ``tokens`` (hooks keep only the sampled rows).

    Args:
        model: a HookedTransformer.
        tokens: a text, a list of texts or token ids (`geomlens.data.inputs.as_sequences`), or
            right-padded [batch, pos] ids with ``lengths``.
        lengths: valid length of each row of a [batch, pos] tensor (None = every position is
            valid, or the texts' own lengths).
        ks: NDCG cut-offs; None = the full vocabulary (bracketed: ``ndcg_full_err``).
        positions: how many valid positions to score, drawn uniformly without replacement
            (`sample_positions`, seeded by ``seed``); None = all.
        topk: K of the NDCG (ranks 1..K exact); raised to the largest finite k if smaller.
        gain: NDCG gain of p (registry `geomlens.metrics.ranking.GAINS`).
        lenses: names from `LENSES` (None = all of them, in registry order).
        segment_ids: a name per row (default "0", "1", ...): the unit of the CI
            (`geomlens.analysis.layer_summary.summarize_layer_lens`).
        position_chunk: positions scored at once (None: ~`VOCAB_BUDGET` / d_vocab).

    Returns:
        One row per (sampled position, layer, lens): ``segment, domain, pos, layer`` (-1 =
        embedding), ``hook`` (full hook name), ``lens``, ``ndcg@k``..., ``top1``, ``top10``,
        ``ndcg_full_err`` (NDCG@full's per-position error bound; 0 where K >= d_vocab).
    """
    if not (isinstance(tokens, Tensor) and tokens.ndim == 2):
        if lengths is not None:
            raise InputError("layer_ndcg: lengths goes with [batch, pos] token ids only")
        tokens, lengths = as_batch(model, tokens, where="layer_ndcg")
    tokens = tokens.to(model.cfg.device)
    if lengths is None:
        lengths = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long)
    valid = ValidPositions.of(tokens, lengths.to(tokens.device))
    cap = LayerLensCapture(
        model=model, sampled=sample_positions(len(valid.pos), positions, seed=seed),
        ks=tuple(ks), topk=max([topk, *(k for k in ks if k is not None)]), gain=gain,
        lenses=tuple(LENSES.names() if lenses is None else lenses), position_chunk=position_chunk)
    logits = model.run_with_hooks(tokens, fwd_hooks=cap.hooks(tokens, lengths, 0))
    names = [str(i) for i in range(tokens.shape[0])] if segment_ids is None else list(segment_ids)
    rows = valid.batch_idx.cpu().numpy()
    cap.add(logits[valid.batch_idx, valid.pos], [names[r] for r in rows], ["all"] * len(rows),
            valid.pos.cpu().numpy())
    return cap.frame()
