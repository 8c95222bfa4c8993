"""Temperature-calibrated JSD and the uniform reference of the analysis.

The raw JSD of a score compares p with the score's own distribution q = softmax(s), whose
temperature is arbitrary (the distance scores give a nearly flat q). Calibration fits, for
every (hidden, target, score), one temperature τ and reports JSD(p ‖ softmax(s / τ)) on
segments the fit did not see. Exactly:

    split     the segments (sequences) are shuffled with ``torch.randperm`` seeded by
              ``seed + 11``; the first round(``calibration_fraction`` · n) of them (at least 1,
              at most n − 1) are the calibration segments, the rest the evaluation segments
              (a run with one segment is not calibrated).
    sample    from the same generator, ``calibration_positions`` positions are drawn
              uniformly without replacement from all positions of the calibration segments
              (the fit sample), then ``calibration_eval_positions`` from the evaluation
              segments (the eval sample); None = every position (the exact mode).
    inputs    during the streaming pass only d_model-sized vectors of the sampled positions
              are kept: each requested hidden state and the LM head's input (ln_final); at the
              end p is recomputed from the latter with the model's own ``unembed`` and logit
              soft-cap, s with the analysis's own score functions (`parts_from_dot`,
              `geomlens.geometry.scores`), with the same logits reuse for a tied head.
    s         the logits of the score's distribution q: the score itself, except inv_dist
              (ln(1/(d + eps))), so τ = 1 gives back the raw JSD.
    objective τ minimises J(τ) = mean over the fit sample of JSD(p ‖ softmax(s / τ)) (in the
              run's JSD unit): a grid over ln τ, one point per decade around the scale
              τ₀ = median std(s) / std(ln p), from τ₀/10 to 10 τ₀ (extended to at most
              10^±6 τ₀ while the best point is at an edge), then bounded Brent between the best
              point's neighbours to 0.01 in ln τ (`geomlens.metrics.temperature`).
    report    jsd_calibrated = JSD(p ‖ softmax(s / τ)) on the eval sample: the mean over
              positions of each evaluation segment, then the mean over evaluation segments with
              a 95% percentile bootstrap CI over those segments (``n_bootstrap``, ``seed``).
    uniform   JSD(p ‖ uniform over the d_vocab tokens), per position for every position of the
              run (mean per segment, bootstrap over all segments, like the raw JSD), and on the
              eval sample (as jsd_calibrated: a uniform q is the same at every τ).

Per-position JSDs are float32 (`js_divergence_fast`); means are float64. The cost is fixed by
the two sample sizes, not by the run size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.analysis.config import AnalyzeConfig
from geomlens.analysis.fused import parts_from_dot, reference_terms
from geomlens.analysis.sampling import rows_in_batch, sample_sorted, seeded
from geomlens.analysis.scoring import Targets
from geomlens.backend import view_of
from geomlens.fused import Fused
from geomlens.geometry.scores import get_score
from geomlens.metrics.divergence import js_divergence_fast
from geomlens.metrics.temperature import TemperatureFit, fit_temperature, tempered_jsd_blocks

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

UNIFORM = "uniform"
"""The ``score`` of the uniform reference record."""
Key = tuple[str | None, str | None, str]
"""(hidden, target, score); hidden and target are None for the uniform reference."""


@dataclass
class CalibrationSplit:
    """Which segments fit τ and which evaluate it, and the sampled stream positions."""

    fit_segments: Int[Tensor, "n_fit_segments"]
    eval_segments: Int[Tensor, "n_eval_segments"]
    fit_positions: Int[Tensor, "n_fit"]
    """Stream indices ((sequence, position) order) of the fit sample, sorted."""
    eval_positions: Int[Tensor, "n_eval"]
    """Stream indices of the eval sample, sorted."""


def _positions_of(segments: Tensor, starts: Tensor, lengths: Tensor) -> Tensor:
    if len(segments) == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([torch.arange(int(starts[s]), int(starts[s] + lengths[s])) for s in segments])


def _sample(positions: Tensor, k: int | None, gen: torch.Generator) -> Tensor:
    if k is None or k >= len(positions):
        return positions
    return positions[sample_sorted(len(positions), k, gen)].sort().values


def calibration_split(cfg: AnalyzeConfig, lengths: Sequence[int]) -> CalibrationSplit | None:
    """The seeded segment split and position samples (None when there are < 2 segments)."""
    n = len(lengths)
    if n < 2:
        return None
    gen = seeded(cfg.seed, "calibration")
    order = torch.randperm(n, generator=gen)
    n_fit = min(n - 1, max(1, round(cfg.calibration_fraction * n)))
    fit, held = order[:n_fit].sort().values, order[n_fit:].sort().values
    lens = torch.as_tensor(list(lengths), dtype=torch.long)
    starts = torch.cumsum(lens, 0) - lens
    return CalibrationSplit(
        fit, held, _sample(_positions_of(fit, starts, lens), cfg.calibration_positions, gen),
        _sample(_positions_of(held, starts, lens), cfg.calibration_eval_positions, gen))


def recompute_logits(
    model: HookedTransformer, unembed_in: Float[Tensor, "n_positions d_model"]
) -> Float[Tensor, "n_positions d_vocab"]:
    """The LM logits from the LM head's input, as the forward computes them (``unembed``, then
    the model's output-logit soft-cap), in float32."""
    view = view_of(model)
    logits = model.unembed(unembed_in.to(view.W_U.dtype)[None])[0].float()
    cap = view.softcap
    return logits if cap is None else cap * torch.tanh(logits / cap)


def uniform_jsd(logits: Float[Tensor, "n_positions d_vocab"], base: str) -> Float[Tensor, "n_positions"]:
    """JSD(p ‖ uniform over d_vocab) per position, p = softmax(logits) as the analysis makes it."""
    lse, p, _ = reference_terms(logits, "linear")
    return js_divergence_fast(p, logits - lse, torch.zeros_like(logits), base=base)


def score_logits(
    h: Float[Tensor, "n_positions d_model"], logits: Float[Tensor, "n_positions d_vocab"],
    targets: Targets, hidden: str, target: str, names: Sequence[str], eps: float,
) -> Iterator[tuple[str, Float[Tensor, "n_positions d_vocab"]]]:
    """``(score, s)``: the logits of each score's q for one (hidden, target) pair, from the
    same dot products as `geomlens.analysis.scoring.score_batch` (the logits for a tied head)."""
    dot = logits if targets.reuses_logits(hidden, target) else h @ targets.matrices[target].T
    parts = parts_from_dot(dot.float(), h.pow(2).sum(-1, keepdim=True),
                           targets.sq_norms[target], eps)
    for name in names:
        spec = get_score(name)
        yield name, spec.q_logits(spec.score(parts))


@dataclass
class CalibrationResult:
    """Everything calibration measured (see the module docstring)."""

    fits: dict[Key, TemperatureFit]
    """(hidden, requested target, score) -> the fitted temperature."""
    per_segment: pd.DataFrame
    """jsd_calibrated per (segment, domain, hidden, target, score) over the eval sample, with
    n_positions; the uniform reference has score "uniform" and hidden/target None."""
    uniform: pd.DataFrame
    """JSD(p ‖ uniform) per segment over all its positions: segment, domain, n_positions, jsd."""
    counts: dict = field(default_factory=dict)
    """n_fit_segments, n_eval_segments, n_fit_positions, n_eval_positions (or skipped)."""


@dataclass
class CalibrationBatch:
    """What one batch adds to a `CalibrationStore` (`CalibrationStore.batch_part`)."""

    first_seq: int
    """The sequence of the batch's row 0."""
    uniform_sum: np.ndarray
    """Per row of the batch: the sum over its positions of JSD(p ‖ uniform)."""
    counts: np.ndarray
    """Per row: its number of positions."""
    seq: Tensor | None = None
    """The sequence of each sampled position in the batch (None: none sampled)."""
    vectors: dict[str, Tensor] | None = None
    """The sampled positions' hidden states and LM-head input, by name."""


class CalibrationStore:
    """Keeps the sampled positions' vectors during the streaming pass and the per-segment sums
    of JSD(p ‖ uniform); `finish` fits and evaluates."""

    def __init__(self, cfg: AnalyzeConfig, lengths: Sequence[int], segment_ids: Sequence[str],
                 domains: Sequence[str]) -> None:
        self.cfg, self.segment_ids, self.domains = cfg, list(segment_ids), list(domains)
        self.split = calibration_split(cfg, lengths)
        self.uniform_sum = np.zeros(len(lengths))
        self.counts = np.zeros(len(lengths), dtype=np.int64)
        empty = torch.zeros(0, dtype=torch.long)
        self.sampled = (empty if self.split is None else
                        torch.cat([self.split.fit_positions, self.split.eval_positions]).sort().values)
        self.vectors: dict[str, list[Tensor]] = {}
        self.seq: list[Tensor] = []

    def batch_part(self, model: HookedTransformer, batch, offset: int, first_seq: int,
                   fused: Fused, position_chunk: int) -> CalibrationBatch:
        """What one captured batch (`geomlens.analysis.capture.CapturedBatch`) at stream
        ``offset``, whose row 0 is sequence ``first_seq``, adds (`add` keeps it)."""
        rows_of = batch.positions.batch_idx.cpu()
        n_rows = len(batch.lengths)
        uniform_sum = np.zeros(n_rows)
        for start in range(0, batch.n_positions, position_chunk):
            chunk = slice(start, start + position_chunk)
            jsd = fused(uniform_jsd, batch.logits[chunk].float(), self.cfg.jsd_base)
            np.add.at(uniform_sum, rows_of[chunk].numpy(), jsd.double().cpu().numpy())
        part = CalibrationBatch(first_seq, uniform_sum,
                                np.bincount(rows_of.numpy(), minlength=n_rows).astype(np.int64))
        rows = rows_in_batch(self.sampled, offset, batch.n_positions, batch.logits.device)
        if len(rows):
            part.seq = rows_of[rows.cpu()] + first_seq
            kept = {name: vec[rows] for name, vec in batch.hidden.items()}
            part.vectors = {**kept, "unembed_in": _unembed_in(model, kept)}
        return part

    def add(self, part: CalibrationBatch) -> None:
        """One batch's part, in batch order (each sequence lies in one batch, so its uniform
        sum is the batch's own: 0 + x)."""
        rows = slice(part.first_seq, part.first_seq + len(part.uniform_sum))
        self.uniform_sum[rows] += part.uniform_sum
        self.counts[rows] += part.counts
        if part.seq is None:
            return
        self.seq.append(part.seq)
        for name, vec in part.vectors.items():
            self.vectors.setdefault(name, []).append(vec)

    def finish(self, model: HookedTransformer, targets: Targets, fused: Fused,
               position_chunk: int) -> CalibrationResult:
        uniform = self._uniform_frame()
        if self.split is None or not self.seq:
            return CalibrationResult({}, pd.DataFrame(), uniform,
                                     {"skipped": "calibration needs >= 2 segments"})
        vec = {k: torch.cat(v).to(model.W_U.device) for k, v in self.vectors.items()}
        seq = torch.cat(self.seq)
        is_fit = torch.isin(self.sampled, self.split.fit_positions)
        fit_rows, eval_rows = is_fit.nonzero()[:, 0], (~is_fit).nonzero()[:, 0]
        fits = self._fit(model, targets, fused, {k: v[fit_rows] for k, v in vec.items()})
        per_position = self._evaluate(model, targets, fused, position_chunk, fits,
                                      {k: v[eval_rows] for k, v in vec.items()})
        counts = {"n_fit_segments": len(self.split.fit_segments),
                  "n_eval_segments": len(self.split.eval_segments),
                  "n_fit_positions": len(fit_rows), "n_eval_positions": len(eval_rows)}
        return CalibrationResult(self._aliased(targets, fits),
                                 self._eval_frame(targets, per_position, seq[eval_rows]),
                                 uniform, counts)

    def _pairs(self, targets: Targets) -> list[tuple[str, str]]:
        return [(h, t) for h in self.cfg.hidden for t in targets.matrices]

    def _fit(self, model, targets: Targets, fused: Fused, vec: dict[str, Tensor]) -> dict[Key, TemperatureFit]:
        """τ of every (hidden, distinct target, score) on the fit sample (whole [n_fit, d_vocab]
        matrices: p, ln p, the pair's dot products and one score's s at a time)."""
        logits = recompute_logits(model, vec["unembed_in"])
        lse, p, _ = fused(reference_terms, logits, "linear")
        logp = logits - lse
        fits: dict[Key, TemperatureFit] = {}
        for hidden, target in self._pairs(targets):
            for name, s in score_logits(vec[hidden], logits, targets, hidden, target,
                                        self.cfg.scores, self.cfg.eps):
                fits[(hidden, target, name)] = fit_temperature(p, logp, s, base=self.cfg.jsd_base,
                                                               call=fused)
        return fits

    def _evaluate(self, model, targets: Targets, fused: Fused, position_chunk: int,
                  fits: dict[Key, TemperatureFit], vec: dict[str, Tensor]) -> dict[Key, np.ndarray]:
        """Per-position JSD(p ‖ softmax(s / τ)) on the eval sample (and the uniform's), in
        chunks of ``position_chunk`` positions."""
        out: dict[Key, list[np.ndarray]] = {}
        n = len(vec["unembed_in"])
        for start in range(0, n, position_chunk):
            chunk = {k: v[start:start + position_chunk] for k, v in vec.items()}
            logits = recompute_logits(model, chunk["unembed_in"])
            lse, p, _ = fused(reference_terms, logits, "linear")
            logp = logits - lse
            values = {(None, None, UNIFORM): fused(uniform_jsd, logits, self.cfg.jsd_base)}
            for hidden, target in self._pairs(targets):
                for name, s in score_logits(chunk[hidden], logits, targets, hidden, target,
                                            self.cfg.scores, self.cfg.eps):
                    values[(hidden, target, name)] = tempered_jsd_blocks(
                        p, logp, s, fits[(hidden, target, name)].tau, base=self.cfg.jsd_base,
                        call=fused)
            for key, v in values.items():
                out.setdefault(key, []).append(v.double().cpu().numpy())
        return {k: np.concatenate(v) for k, v in out.items()}

    def _aliased(self, targets: Targets, fits: dict[Key, TemperatureFit]) -> dict[Key, TemperatureFit]:
        return {(h, alias, s): fit for (h, t, s), fit in fits.items()
                for alias in targets.requested_as(t)}

    def _eval_frame(self, targets: Targets, per_position: dict[Key, np.ndarray],
                    seq: Tensor) -> pd.DataFrame:
        seq_np = seq.numpy()
        segs, inverse = np.unique(seq_np, return_inverse=True)
        n_pos = np.bincount(inverse, minlength=len(segs))
        frames = []
        for (hidden, target, score), values in per_position.items():
            means = np.bincount(inverse, weights=values, minlength=len(segs)) / n_pos
            for alias in ([None] if target is None else targets.requested_as(target)):
                frames.append(pd.DataFrame({
                    "segment": [self.segment_ids[i] for i in segs],
                    "domain": [self.domains[i] for i in segs], "hidden": hidden,
                    "target": alias, "score": score, "n_positions": n_pos,
                    "jsd_calibrated": means}))
        return pd.concat(frames, ignore_index=True)

    def _uniform_frame(self) -> pd.DataFrame:
        seen = self.counts > 0
        return pd.DataFrame({"segment": np.array(self.segment_ids, dtype=object)[seen],
                             "domain": np.array(self.domains, dtype=object)[seen],
                             "n_positions": self.counts[seen],
                             "jsd": self.uniform_sum[seen] / self.counts[seen]})


def _unembed_in(
    model: HookedTransformer, hidden: dict[str, Float[Tensor, "n_positions d_model"]]
) -> Float[Tensor, "n_positions d_model"]:
    """The LM head's input at the given positions: ln_final when captured, else the model's
    final norm applied to the captured last-block resid_post."""
    if "ln_final" in hidden:
        return hidden["ln_final"]
    resid = hidden["resid_post"]
    ln_final = getattr(model, "ln_final", None)
    if ln_final is None or model.cfg.normalization_type is None:
        return resid
    return ln_final(resid.to(model.W_U.dtype)[None])[0].float()
