"""The distance ranking along the trajectory: at every layer, how well does each lens rank the
vocabulary like the model's final next-token distribution p?

For a position with final logits z (p = softmax(z)) and residual stream h at layer l
(``layer = -1``: the embedding ``blocks.0.hook_resid_pre``; ``layer = l >= 0``:
``blocks.{l}.hook_resid_post``), each lens (registry `LENSES`, `geomlens.analysis.lenses`:
distance_raw, distance_ln_final, distance_ln_final_gain, logit) scores every token v, and its
ranking is compared with p by the analysis's own NDCG (`geomlens.analysis.agreement`:
`reference` + `rank_metrics`, gains = gain(p), top-K exact and NDCG@full bracketed with a
per-position error bound ``ndcg_full_err``; top1 and top10 come with it).

Cost: (n_layers + 1) × 2 (tied) or 3 matmuls of [positions, d_model] × [d_model, d_vocab]
(layers stacked into large matmuls by `geomlens.analysis.lenses.lens_slices`), so the lens runs on
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
from geomlens.analysis.lenses import (  # noqa: F401  (re-exported: the lens registry's home)
    LENSES,
    LayerInputs,
    LensContext,
    affine_fit,
    lens_slices,
    product_cells,
    score_buffers,
)
from geomlens.analysis.sampling import SEED_OFFSETS, rows_in_batch, sample_sorted
from geomlens.backend import view_of
from geomlens.data.batching import ValidPositions
from geomlens.data.inputs import TextInput, as_batch
from geomlens.errors import InputError

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

EMBEDDING_LAYER = -1
"""The ``layer`` value of the embedding (``blocks.0.hook_resid_pre``)."""
VOCAB_BUDGET = 1 << 22
"""Default [position, token] entries scored at once (16 MiB per float32 matrix)."""
LAYER_LENS_KEYS = ("segment", "domain", "pos", "layer", "hook", "lens")
LensRows = tuple[Tensor, Tensor, tuple[np.ndarray, np.ndarray, np.ndarray]]
"""One batch's sampled rows: residual stream [layer, n, d_model], logits [n, d_vocab], and the
(segment, domain, pos) labels."""


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
    buffers: dict[str, Tensor] | None = None,
) -> dict[tuple[int, str], dict[str, Float[Tensor, "n_positions"]]]:
    """(layer index into ``resid``, lens) -> metric -> one value per position, for one chunk
    of positions: one `reference` of p shared by every layer and lens, then every layer and
    lens scored by `lens_slices` and each slice by `rank_metrics` (the analysis's NDCG).
    ``buffers``: `score_buffers` to reuse across chunks."""
    ref = reference(logits.float(), topk=max(topk, *(k for k in ks if k is not None)), gain=gain)
    parts: dict[tuple[int, str], list[dict[str, Tensor]]] = {}
    for i, lens, a, b, scores, _ in lens_slices(ctx, resid, lenses, buffers=buffers,
                                                 cells=product_cells(ctx.W_E.shape[0])):
        parts.setdefault((i, lens), []).append(rank_metrics(scores, ref.rows(a, b), ks=list(ks),
                                                            spearman=False))
    return {(i, lens): {m: torch.cat([d[m] for d in parts[i, lens]]) for m in parts[i, lens][0]}
            for i in range(resid.shape[0]) for lens in lenses}


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
        buffers = score_buffers(ctx, min(step, len(logits)), resid.shape[0],
                                product_cells(ctx.W_E.shape[0]))
        for start in range(0, len(logits), step):
            part = slice(start, start + step)
            metrics = lens_metrics(ctx, resid[:, part], logits[part], ks=self.ks,
                                   topk=self.topk, gain=self.gain, lenses=self.lenses,
                                   buffers=buffers)
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
