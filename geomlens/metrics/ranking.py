"""Ranking agreement between a vocabulary score and a reference distribution p.

NDCG@k (thesis eqs. 5.3-5.5), with relevance rel = p of each token:

    DCG@k  = Σ_{i=1..k} gain(rel_{σ(i)}) / log2(i + 1)     σ sorts tokens by score (descending)
    IDCG@k = the same with σ sorting by rel (the ideal ranking)
    NDCG@k = DCG@k / IDCG@k                                 k = None means the full vocabulary

Gains (registry `GAINS`): ``"exp2"`` = 2^rel − 1 (the thesis), ``"linear"`` = rel (what
sklearn's ``ndcg_score`` computes).

`ndcg_at_k` is exact (a full sort for k = None). `ndcg_topk` avoids the full sort: it ranks only
the top K of the score (and of rel) exactly. The tokens below rank K are split into 64
equal-width bins of the score (between its minimum and its K-th best value); exact counts per
bin give each bin's rank range [A+1, A+C], hence a discount range [1/log2(A+C+1), 1/log2(A+2)]
for the bin's gain sum. With a single bin this is the simple bracket
[1/log2(V+1), 1/log2(K+2)]. These bracket the rest of DCG and of IDCG; NDCG@full is the
midpoint of the resulting interval and its half-width is a rigorous per-position bound on the
absolute error. NDCG@k for k ≤ K is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.metrics.selection import (
    N_BUCKETS,
    RankSummary,
    bucket_bounds,
    bucket_index,
    rank_summary,
)
from geomlens.registry import Registry

GainFn = Callable[[Tensor], Tensor]
GAINS: Registry[GainFn] = Registry("gain")
"""NDCG gain functions of the relevance p, by name (the choices of ``--gain``)."""


def register_gain(name: str, fn: GainFn, *, help: str) -> GainFn:
    """Register an NDCG gain function with a one-line definition; a duplicate name raises."""
    return GAINS.register(name, fn, help=help)


register_gain("exp2", lambda rel: torch.expm1(rel * math.log(2.0)),  # precise near 0
              help="2^p - 1 (the thesis)")
register_gain("linear", lambda rel: rel, help="p (as sklearn's ndcg_score)")


def get_gain(name: str) -> GainFn:
    """The registered gain ``name`` (an unknown name raises, naming the closest)."""
    return GAINS.get(name)


def discounts(n: int, *, device: torch.device | str = "cpu") -> Float[Tensor, "k"]:
    """1 / log2(i + 1) for ranks i = 1..n."""
    ranks = torch.arange(2, n + 2, dtype=torch.float64, device=device)
    return (1.0 / torch.log2(ranks)).float()


def _dcg_of_order(gains: Tensor, order: Tensor) -> Tensor:
    disc = discounts(order.shape[-1], device=gains.device)
    return (gains.gather(-1, order) * disc).sum(-1)


def ndcg_at_k(
    scores: Float[Tensor, "*batch d_vocab"],
    rel: Float[Tensor, "*batch d_vocab"],
    *,
    k: int | None = None,
    gain: str = "exp2",
) -> Float[Tensor, "*batch"]:
    """Exact NDCG@k of the ranking by ``scores`` against relevance ``rel`` (over the last dim).

    Ties in ``scores`` are broken by `torch.topk`/`torch.sort` order (no tie averaging).
    Returns 0 where every relevance is 0.
    """
    d_vocab = scores.shape[-1]
    k_eff = d_vocab if k is None else min(k, d_vocab)
    gains = get_gain(gain)(rel)
    order = scores.topk(k_eff, dim=-1).indices
    ideal = rel.topk(k_eff, dim=-1).indices
    dcg = _dcg_of_order(gains, order)
    idcg = _dcg_of_order(gains, ideal)
    return torch.where(idcg > 0, dcg / idcg.clamp_min(1e-30), torch.zeros_like(idcg))


@dataclass
class IdealDCG:
    """Everything NDCG needs from the reference distribution, computed once per position."""

    gains: Float[Tensor, "n_positions d_vocab"]
    """gain(rel) of every token."""
    total: Float[Tensor, "n_positions"]
    """Σ_v gain(rel_v)."""
    top_indices: Int[Tensor, "n_positions k"]
    """The K most relevant tokens, most relevant first."""
    prefix: Float[Tensor, "n_positions k"]
    """IDCG@i for i = 1..K (cumulative)."""
    rest_lo: Float[Tensor, "n_positions"]
    """Lower bound of IDCG@full − IDCG@K."""
    rest_hi: Float[Tensor, "n_positions"]
    """Upper bound of IDCG@full − IDCG@K (0 and 0 when K = V: exact)."""


def tail_dcg_bounds(
    values: Float[Tensor, "n_positions d_vocab"],
    gains: Float[Tensor, "n_positions d_vocab"],
    top_indices: Int[Tensor, "n_positions k"],
    *,
    n_buckets: int = N_BUCKETS,
) -> tuple[Float[Tensor, "n_positions"], Float[Tensor, "n_positions"]]:
    """Lower and upper bounds of Σ_{rank > K} gain / log2(rank + 1) for the ranking by ``values``.

    ``top_indices`` are the K best tokens (the exact part). The other tokens are put into
    ``n_buckets`` equal-width bins of ``values`` between the row minimum and the K-th best value;
    a token in a bin with A tokens in better bins and C in its own has a rank in
    [max(A+1, K+1), A+C], so the bin's gain sum is bracketed by the discounts of those ranks.
    Counts are exact, so the bounds hold for any data (ties inside a bin included).
    """
    n_positions, d_vocab = values.shape
    k = top_indices.shape[-1]
    if k >= d_vocab:
        zeros = torch.zeros(n_positions, dtype=gains.dtype, device=gains.device)
        return zeros, zeros
    low = values.amin(-1, keepdim=True)
    high = values.gather(1, top_indices[:, -1:])
    scale = (n_buckets / (high - low)).nan_to_num(0.0, posinf=0.0, neginf=0.0)
    bucket = bucket_index(values, low, scale, n_buckets)
    g_sum = torch.zeros(n_positions, n_buckets, dtype=gains.dtype, device=gains.device)
    g_sum.scatter_add_(1, bucket, gains)
    count = torch.zeros_like(g_sum).scatter_add_(1, bucket, torch.ones_like(gains))
    g_sum.scatter_add_(1, bucket.gather(1, top_indices), -gains.gather(1, top_indices))
    return bucket_bounds(count, g_sum.clamp_min(0.0), k)


def summary_bounds(
    summary: RankSummary, d_vocab: int
) -> tuple[Float[Tensor, "n_positions"], Float[Tensor, "n_positions"]]:
    """`tail_dcg_bounds` from a `rank_summary` (zero when its K covers the vocabulary)."""
    k = summary.top_indices.shape[-1]
    if k >= d_vocab:
        zeros = torch.zeros_like(summary.low[:, 0])
        return zeros, zeros
    return bucket_bounds(summary.count, summary.tail_gains, k)


def ideal_dcg(
    rel: Float[Tensor, "n_positions d_vocab"], *, topk: int, gain: str = "exp2",
    gains: Float[Tensor, "n_positions d_vocab"] | None = None,
) -> IdealDCG:
    """Precompute the ideal ranking's top-K and the bracket on the rest of IDCG@full
    (``gains``: gain(rel) when already computed)."""
    gains = get_gain(gain)(rel) if gains is None else gains
    return ideal_from_summary(rank_summary(rel, gains, k=min(topk, rel.shape[-1])), gains)


def ideal_from_summary(summary: RankSummary, gains: Float[Tensor, "n_positions d_vocab"]) -> IdealDCG:
    """`IdealDCG` from the `rank_summary` of the relevance (with the gains it summed)."""
    top = summary.top_indices
    top_gains = gains.gather(-1, top)
    prefix = (top_gains * discounts(top.shape[-1], device=gains.device)).cumsum(-1)
    rest_lo, rest_hi = summary_bounds(summary, gains.shape[-1])
    return IdealDCG(
        gains=gains, total=gains.sum(-1), top_indices=top, prefix=prefix, rest_lo=rest_lo,
        rest_hi=rest_hi,
    )


@dataclass
class TopKNDCG:
    """NDCG values from `ndcg_topk`."""

    values: dict[int | None, Float[Tensor, "n_positions"]]
    """k -> NDCG@k per position (k = None: full vocabulary, the interval midpoint)."""
    full_error_bound: Float[Tensor, "n_positions"]
    """Per-position max |estimate − exact NDCG@full| (0 when K ≥ V)."""


def ndcg_topk(
    scores: Float[Tensor, "n_positions d_vocab"] | None,
    ideal: IdealDCG,
    *,
    ks: list[int | None] | tuple[int | None, ...],
    score_top_indices: Int[Tensor, "n_positions k"] | None = None,
    summary: RankSummary | None = None,
) -> TopKNDCG:
    """NDCG@k for every k in ``ks`` without a full sort of ``scores``.

    Args:
        scores: the ranking scores (higher = ranked first); None when ``summary`` is given.
        score_top_indices: ``scores.topk(K).indices`` (sorted, best first) with the same K as
            ``ideal``; computed here if None.
        ideal: `ideal_dcg` of the reference relevance.
        ks: cut-offs; each finite k must be ≤ K; None = the full vocabulary (bounded).
        summary: `rank_summary(scores, ideal.gains, k=K)` when already computed (it gives the
            top indices and the tail buckets).
    """
    if summary is not None:
        score_top_indices = summary.top_indices
    elif score_top_indices is None:
        score_top_indices = scores.topk(ideal.top_indices.shape[-1], dim=-1).indices
    k_eff = score_top_indices.shape[-1]
    d_vocab = ideal.gains.shape[-1]
    top_gains = ideal.gains.gather(-1, score_top_indices)
    prefix = (top_gains * discounts(k_eff, device=top_gains.device)).cumsum(-1)
    values: dict[int | None, Tensor] = {}
    bound = torch.zeros_like(ideal.total)
    for k in ks:
        if k is not None and k < d_vocab:
            if k > k_eff:
                raise ValueError(f"NDCG@{k} needs topk_exact >= {k} (got K={k_eff}).")
            values[k] = ndcg_ratio(prefix[:, k - 1], ideal.prefix[:, k - 1])
            continue
        if summary is not None:
            rest_lo, rest_hi = summary_bounds(summary, d_vocab)
        else:
            rest_lo, rest_hi = tail_dcg_bounds(scores, ideal.gains, score_top_indices)
        values[k], bound = ndcg_interval(prefix[:, -1] + rest_lo, prefix[:, -1] + rest_hi,
                                         ideal.prefix[:, -1] + ideal.rest_lo,
                                         ideal.prefix[:, -1] + ideal.rest_hi)
    return TopKNDCG(values=values, full_error_bound=bound)


def ndcg_ratio(dcg: Float[Tensor, "*#batch"], idcg: Float[Tensor, "*#batch"]) -> Float[Tensor, "*#batch"]:
    """DCG / IDCG, 0 where IDCG is 0 (shapes broadcast)."""
    return torch.where(idcg > 0, dcg / idcg.clamp_min(1e-30), torch.zeros_like(dcg))


def ndcg_interval(
    dcg_lo: Float[Tensor, "*#batch"], dcg_hi: Float[Tensor, "*#batch"],
    idcg_lo: Float[Tensor, "*#batch"], idcg_hi: Float[Tensor, "*#batch"],
) -> tuple[Float[Tensor, "*#batch"], Float[Tensor, "*#batch"]]:
    """``(midpoint, half-width)`` of the NDCG interval [dcg_lo / idcg_hi, min(dcg_hi / idcg_lo,
    1)] (0 and 0 where IDCG is 0; shapes broadcast)."""
    lo = dcg_lo / idcg_hi.clamp_min(1e-30)
    hi = torch.minimum(dcg_hi / idcg_lo.clamp_min(1e-30), torch.ones_like(dcg_hi))
    lo = torch.minimum(lo, hi)
    zero = torch.zeros_like(lo)
    return torch.where(idcg_hi > 0, (lo + hi) / 2, zero), torch.where(idcg_hi > 0, (hi - lo) / 2, zero)


def overlap_at_k(
    a_top_indices: Int[Tensor, "n_positions k"], b_top_indices: Int[Tensor, "n_positions k"]
) -> Float[Tensor, "n_positions"]:
    """|A ∩ B| / k for two top-k index sets of equal size."""
    hits = (a_top_indices[:, :, None] == b_top_indices[:, None, :]).any(-1)
    return hits.float().mean(-1)


def topk_overlap(
    scores: Float[Tensor, "*batch d_vocab"],
    rel: Float[Tensor, "*batch d_vocab"],
    *,
    k: int = 10,
) -> Float[Tensor, "*batch"]:
    """|top-k(scores) ∩ top-k(rel)| / k over the last dim."""
    a = scores.topk(k, dim=-1).indices
    b = rel.topk(k, dim=-1).indices
    flat = overlap_at_k(a.reshape(-1, k), b.reshape(-1, k))
    return flat.reshape(a.shape[:-1])


def top1_agreement(
    scores: Float[Tensor, "*batch d_vocab"], rel: Float[Tensor, "*batch d_vocab"]
) -> Float[Tensor, "*batch"]:
    """1.0 where argmax(scores) == argmax(rel), else 0.0."""
    return (scores.argmax(-1) == rel.argmax(-1)).float()
