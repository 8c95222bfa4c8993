"""The element-wise part of the analysis, fused: everything that reads a [n_positions, d_vocab]
matrix entry by entry, in as few passes as `torch.compile` (inductor) can fuse.

    reference_terms(logits)            log-sum-exp, p and gain(p)        once per chunk
    score_terms(logits, lse, dot, ...) JSD of every score, rank keys      once per (hidden,
                                                                          target) and chunk

Compiled, the work of `score_terms` is split into passes that each read only the inputs:
`rank_keys` (the keys the rank summaries need), then `compiled_jsd`: every score's
log-sum-exp, shifted by its maximum read at the top-ranked token (`q_maxima_at`), then the JSD
terms. As one function, inductor writes ~8 vocabulary-sized intermediates per chunk to memory
and reads them back; recomputing the scores from h·e in each pass is cheaper than that
traffic (20-30% on a 2-core CPU).

Both build on the shared definitions (the distance kernel's `sq_distance_from_dot`, the score
registry, `js_divergence_fast`, the gain registry), so the fused and the eager results are the
same function evaluated with a different summation order (tested). `geomlens.fused.Fused` runs
them compiled when asked and falls back to eager (with one warning) when compilation is
unavailable.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.fused import Fused
from geomlens.geometry.distances import sq_distance_from_dot
from geomlens.geometry.scores import ScoreParts, get_score
from geomlens.metrics.divergence import LN2, base_scale, js_divergence_fast, jsd_terms
from geomlens.metrics.ranking import get_gain


def reference_terms(
    logits: Float[Tensor, "n_positions d_vocab"], gain: str
) -> tuple[Float[Tensor, "n_positions 1"], Float[Tensor, "n_positions d_vocab"],
           Float[Tensor, "n_positions d_vocab"]]:
    """``(lse, p, gains)``: log Σ exp(logits), p = softmax(logits), gain(p)."""
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    p = torch.exp(logits - lse)
    return lse, p, get_gain(gain)(p)


def parts_from_dot(
    dot: Float[Tensor, "n_positions d_vocab"],
    h_sq: Float[Tensor, "n_positions 1"],
    e_sq: Float[Tensor, "d_vocab"],
    eps: float,
) -> ScoreParts:
    """The `ScoreParts` every score of the analysis derives from, given ``dot`` = h·e, ‖h‖²
    and ‖e‖² (the squared distances by `sq_distance_from_dot`)."""
    sq = sq_distance_from_dot(dot, h_sq, e_sq)
    return ScoreParts(dot=dot, sq_dist=sq, h_norm=h_sq[:, 0].sqrt(), e_norm=e_sq.sqrt(), eps=eps)


def score_terms(
    logits: Float[Tensor, "n_positions d_vocab"],
    lse: Float[Tensor, "n_positions 1"],
    dot: Float[Tensor, "n_positions d_vocab"],
    h_sq: Float[Tensor, "n_positions 1"],
    e_sq: Float[Tensor, "d_vocab"],
    names: tuple[str, ...],
    groups: tuple[str, ...],
    eps: float,
    base: str,
    dot_is_logits: bool,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """JSD(p ‖ q) of every score in ``names`` and the rank key of every group in ``groups``.

    ``dot`` = h·e; ``dot_is_logits`` says it *is* the LM logits (tied head, b_U = 0, h =
    ln_final): then the dot score's q is p itself and its JSD is exactly 0.
    Returns ``({score: jsd [n]}, {group: key [n, d_vocab]})``."""
    logp = logits - lse
    p = torch.exp(logp)
    parts = parts_from_dot(dot, h_sq, e_sq, eps)
    jsd: dict[str, Tensor] = {}
    for name in names:
        spec = get_score(name)
        if dot_is_logits and name == "dot":
            jsd[name] = torch.zeros_like(lse[:, 0])
            continue
        jsd[name] = js_divergence_fast(p, logp, spec.q_logits(spec.score(parts)), base=base)
    keys = {group: get_score(_group_member(group, names)).ranking(parts) for group in groups}
    return jsd, keys


def _q_logits(
    dot: Tensor, h_sq: Tensor, e_sq: Tensor, names: tuple[str, ...], eps: float
) -> tuple[ScoreParts, list[Tensor]]:
    parts = parts_from_dot(dot, h_sq, e_sq, eps)
    return parts, [get_score(n).q_logits(get_score(n).score(parts)) for n in names]


def rank_keys(dot: Tensor, h_sq: Tensor, e_sq: Tensor, groups: tuple[str, ...],
              names: tuple[str, ...], eps: float) -> list[Float[Tensor, "n_positions d_vocab"]]:
    """Pass 1: the rank key of every group in ``groups`` (see `ScoreSpec.ranking`)."""
    parts = parts_from_dot(dot, h_sq, e_sq, eps)
    return [get_score(_group_member(g, names)).ranking(parts) for g in groups]


def q_maxima_at(
    dot: Float[Tensor, "n_positions d_vocab"], h_sq: Float[Tensor, "n_positions 1"],
    e_sq: Float[Tensor, "d_vocab"], names: tuple[str, ...], eps: float,
    best: Int[Tensor, "n_scores n_positions"],
) -> Float[Tensor, "n_positions n_scores"]:
    """max over the vocabulary of every score's q-logits, read at ``best`` (each score's
    top-ranked token per position, from its group's `rank_summary`): every score of a group is
    a non-decreasing function of the group's key, so its maximum sits where the key's does.
    Evaluates the scores on those few columns only (the distinct ones of the chunk)."""
    cols, where = torch.unique(best, return_inverse=True)  # where: [n_scores, n_positions]
    _, qs = _q_logits(dot[:, cols], h_sq, e_sq[cols], names, eps)
    rows = torch.arange(dot.shape[0], device=dot.device)
    return torch.stack([q[rows, where[i]] for i, q in enumerate(qs)], -1)


def _q_lse(dot: Tensor, h_sq: Tensor, e_sq: Tensor, names: tuple[str, ...], eps: float,
           maxima: Tensor) -> Float[Tensor, "n_positions n_scores"]:
    """Pass 2: log Σ exp(q-logits) of every score (shifted by its maximum; for a
    `proportional` score, log Σ score)."""
    parts = parts_from_dot(dot, h_sq, e_sq, eps)
    sums = []
    for i, name in enumerate(names):
        spec, shift = get_score(name), maxima[:, i:i + 1]
        score = spec.score(parts)
        sums.append((score * (-shift).exp() if spec.proportional
                     else (spec.q_logits(score) - shift).exp()).sum(-1))
    return torch.stack(sums, -1).log() + maxima


def _jsd(p: Tensor, logits: Tensor, lse: Tensor, dot: Tensor, h_sq: Tensor, e_sq: Tensor,
         names: tuple[str, ...], eps: float, base: str,
         q_lse: Tensor) -> Float[Tensor, "n_positions n_scores"]:
    """Pass 3: JSD(p ‖ q) of every score: the terms of `js_divergence_fast`, with q's
    normalizer from pass 2."""
    p_logp = p * (logits - lse)
    parts = parts_from_dot(dot, h_sq, e_sq, eps)
    jsd = []
    for i, name in enumerate(names):
        spec, norm = get_score(name), q_lse[:, i:i + 1]
        score = spec.score(parts)
        logq = spec.q_logits(score) - norm
        q = score * (-norm).exp() if spec.proportional else logq.exp()
        jsd.append(jsd_terms(p, p_logp, q, logq).sum(-1).clamp(0.0, LN2) * base_scale(base))
    return torch.stack(jsd, -1)


def compiled_jsd(
    fused: Fused, p: Tensor, logits: Tensor, lse: Tensor, dot: Tensor, h_sq: Tensor,
    e_sq: Tensor, names: tuple[str, ...], eps: float, base: str,
    best: Int[Tensor, "n_scores n_positions"],
) -> dict[str, Float[Tensor, "n_positions"]]:
    """JSD(p ‖ q) of every score in ``names`` in two compiled reductions (log-sum-exp, then
    the JSD terms) that read only the inputs; ``best``: see `q_maxima_at`."""
    if not names:
        return {}
    maxima = q_maxima_at(dot, h_sq, e_sq, names, eps, best)
    q_lse = fused(_q_lse, dot, h_sq, e_sq, names, eps, maxima)
    values = fused(_jsd, p, logits, lse, dot, h_sq, e_sq, names, eps, base, q_lse)
    return {n: values[:, i] for i, n in enumerate(names)}


def _group_member(group: str, names: tuple[str, ...]) -> str:
    return next(n for n in names if (get_score(n).rank_group or n) == group)
