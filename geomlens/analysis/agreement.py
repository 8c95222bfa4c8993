"""Per-position metrics of the vocabulary scores against the LM head's distribution p.

`reference` precomputes everything that depends on p only (log-sum-exp, p, the gains, the
ideal DCG prefix and bracket, p's top tokens, p's ranks at the Spearman positions), once per
chunk of positions. `pair_metrics` scores one (hidden, target) pair: the element-wise work
(every score's JSD, the rank keys) in one fused pass (`geomlens.analysis.fused`), then one
`rank_summary` (top-K + tail buckets) per rank group, from which NDCG@k, NDCG@full with its
bracket, top-1 and top-10 follow. `all_score_metrics` is the direct computation from
`ScoreParts` (any score matrix, optionally with the vocabulary permuted): the reference the
tests hold the fast path to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.analysis.fused import compiled_jsd, rank_keys, reference_terms, score_terms
from geomlens.fused import Fused
from geomlens.geometry.scores import ScoreParts, get_score
from geomlens.metrics.correlation import centered_ranks, spearman_from_ranks
from geomlens.metrics.divergence import js_divergence_fast
from geomlens.metrics.ranking import IdealDCG, ideal_from_summary, ndcg_topk, overlap_at_k
from geomlens.metrics.selection import RankSummary, rank_summary

#: metric name -> True if larger means closer agreement with p (direction of the permutation test)
GREATER_IS_BETTER: dict[str, bool] = {"jsd": False}

Metrics = dict[str, dict[str, Tensor]]
"""score name -> metric name -> one value per position."""


def metric_names(ks: list[int | None], *, spearman: bool) -> list[str]:
    """Column names of the metrics, in table order."""
    names = [ndcg_name(k) for k in ks] + ["jsd"]
    if spearman:
        names.append("spearman")
    return names + ["top1", "top10"]


def ndcg_name(k: int | None) -> str:
    return "ndcg@full" if k is None else f"ndcg@{k}"


def greater_is_better(metric: str) -> bool:
    return GREATER_IS_BETTER.get(metric, True)


def rank_groups(names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """score name -> its rank group (scores of one group rank the vocabulary identically)."""
    return {name: get_score(name).rank_group or name for name in names}


@dataclass
class Reference:
    """Quantities of p shared by every score at the same positions."""

    logits: Float[Tensor, "n_positions d_vocab"]
    """The LM logits."""
    lse: Float[Tensor, "n_positions 1"]
    """log Σ exp(logits)."""
    p: Float[Tensor, "n_positions d_vocab"]
    """p = softmax(logits)."""
    ideal: IdealDCG
    """Ideal DCG of relevance p (top-K of p, prefix sums, bracket on the rest)."""
    summary: RankSummary
    """`rank_summary` of p (the ranking by the logits themselves)."""
    ranks: Float[Tensor, "n_spearman d_vocab"] | None = None
    """Centered average ranks of the logits at ``spearman_rows`` (None: no Spearman)."""
    spearman_rows: Int[Tensor, "n_spearman"] | None = None
    """The rows (positions of the chunk) that get Spearman's rho."""

    def head(self, n_positions: int) -> Reference:
        """The same reference restricted to the first ``n_positions`` positions."""
        return self.rows(0, n_positions)

    def rows(self, start: int, stop: int) -> Reference:
        """The same reference at positions ``start..stop-1`` (views, no copy)."""
        sl = slice(start, stop)
        rows, ranks = self.spearman_rows, self.ranks
        if rows is not None:
            keep = (rows >= start) & (rows < stop)
            rows, ranks = rows[keep] - start, ranks[keep]
        i, s = self.ideal, self.summary
        return Reference(
            logits=self.logits[sl], lse=self.lse[sl], p=self.p[sl],
            ideal=IdealDCG(gains=i.gains[sl], total=i.total[sl],
                           top_indices=i.top_indices[sl], prefix=i.prefix[sl],
                           rest_lo=i.rest_lo[sl], rest_hi=i.rest_hi[sl]),
            summary=RankSummary(*(getattr(s, f)[sl] for f in s.__dataclass_fields__)),
            ranks=ranks, spearman_rows=rows,
        )


def reference(
    logits: Float[Tensor, "n_positions d_vocab"], *, topk: int, gain: str,
    spearman: bool = False, spearman_rows: Int[Tensor, "n_spearman"] | None = None,
    fused: Fused | None = None,
) -> Reference:
    """Precompute the p side of every metric from the LM logits. Spearman ranks are computed at
    ``spearman_rows`` (all rows when ``spearman`` and no rows are given)."""
    logits = logits.float()
    lse, p, gains = (fused or Fused(False))(reference_terms, logits, gain)
    d_vocab = logits.shape[-1]
    k_eff = max(min(topk, d_vocab), min(10, d_vocab))
    summary = rank_summary(p, gains, k=k_eff)
    if spearman and spearman_rows is None:
        spearman_rows = torch.arange(logits.shape[0], device=logits.device)
    ranks = None
    if spearman_rows is not None:
        ranks = (centered_ranks(logits[spearman_rows]) if len(spearman_rows)
                 else logits.new_empty(0, d_vocab))
    return Reference(logits=logits, lse=lse, p=p, ideal=ideal_from_summary(summary, gains),
                     summary=summary, ranks=ranks, spearman_rows=spearman_rows)


def summary_metrics(
    summary: RankSummary, ref: Reference, *, ks: list[int | None],
    key: Float[Tensor, "n_positions d_vocab"] | None = None,
) -> dict[str, Float[Tensor, "n_positions"]]:
    """The metrics that depend only on the ranking: ndcg@k, top1 (argmax score == argmax p),
    top10 (|top10(score) ∩ top10(p)| / 10), ``ndcg_full_err`` (the NDCG@full error bound) and,
    when the reference has Spearman rows and ``key`` (the ranking key) is given, spearman
    (rho(key, p) over the vocabulary; NaN at the other rows)."""
    nd = ndcg_topk(None, ref.ideal, ks=ks, summary=summary)
    top, ideal_top = summary.top_indices, ref.ideal.top_indices
    out: dict[str, Tensor] = {ndcg_name(k): v for k, v in nd.values.items()}
    if ref.ranks is not None and key is not None:
        rho = torch.full_like(nd.full_error_bound, float("nan"))
        rows = ref.spearman_rows
        if len(rows):
            rho[rows] = spearman_from_ranks(centered_ranks(key[rows].float()), ref.ranks)
        out["spearman"] = rho
    out["top1"] = (top[:, 0] == ideal_top[:, 0]).float()
    k10 = min(10, top.shape[-1])
    out["top10"] = overlap_at_k(top[:, :k10], ideal_top[:, :k10])
    out["ndcg_full_err"] = nd.full_error_bound
    return out


@dataclass
class ScoredPair:
    """The metrics of one (hidden, target) pair on a chunk, and what the controls reuse."""

    metrics: Metrics
    summaries: dict[str, RankSummary]
    """Rank group -> its `rank_summary`."""
    keys: dict[str, Tensor]
    """Rank group -> the values its summary ranks [n_positions, d_vocab] (p for the dot group
    when the dot products are the logits)."""


def pair_metrics(
    ref: Reference,
    dot: Float[Tensor, "n_positions d_vocab"],
    h_sq: Float[Tensor, "n_positions 1"],
    e_sq: Float[Tensor, "d_vocab"],
    *,
    names: list[str],
    ks: list[int | None],
    eps: float,
    jsd_base: str = "nats",
    dot_is_logits: bool = False,
    fused: Fused | None = None,
) -> ScoredPair:
    """Every named score of one (hidden, target) pair from its dot products ``dot`` = h·e.

    ``dot_is_logits``: ``dot`` is the LM logits (h = ln_final, a target equal to the
    unembedding, b_U = 0), so the dot score ranks like p: its rank metrics come from p's own
    summary and its JSD is 0."""
    fused = fused or Fused(False)
    group_of = rank_groups(names)
    groups = tuple(dict.fromkeys(group_of.values()))
    computed = tuple(g for g in groups if not (dot_is_logits and g == "dot"))
    k = ref.ideal.top_indices.shape[-1]
    args = (dot.float(), h_sq, e_sq)
    if fused.enabled:  # keys, their summaries, then the JSDs (maxima at the summaries' top-1)
        keys = dict(zip(computed, fused(rank_keys, *args, computed, tuple(names), float(eps))))
        summaries = {g: rank_summary(keys[g], ref.ideal.gains, k=k) for g in computed}
        scored = tuple(n for n in names if group_of[n] in computed)
        best = torch.stack([summaries[group_of[n]].top_indices[:, 0] for n in scored]) \
            if scored else None
        jsd = compiled_jsd(fused, ref.p, ref.logits, ref.lse, *args, scored, float(eps),
                           jsd_base, best)
        jsd.update({n: torch.zeros_like(ref.lse[:, 0]) for n in names if n not in scored})
    else:
        jsd, keys = score_terms(ref.logits, ref.lse, *args, tuple(names), computed, float(eps),
                                jsd_base, dot_is_logits)
        summaries = {g: rank_summary(keys[g], ref.ideal.gains, k=k) for g in computed}
    if len(computed) < len(groups):  # the dot group is p's own ranking
        summaries["dot"], keys["dot"] = ref.summary, ref.p
    ranked = {g: summary_metrics(summaries[g], ref, ks=ks,
                                 key=keys[g] if g in computed else ref.logits) for g in groups}
    metrics = {name: {**ranked[group_of[name]], "jsd": jsd[name]} for name in names}
    return ScoredPair(metrics, summaries, keys)


# ---------------------------------------------------------------- the direct computation


def rank_metrics(
    rank_score: Float[Tensor, "n_positions d_vocab"],
    ref: Reference,
    *,
    ks: list[int | None],
    spearman: bool = True,
) -> dict[str, Float[Tensor, "n_positions"]]:
    """`summary_metrics` of any ranking score matrix (spearman needs a reference with ranks)."""
    rank_score = rank_score.float()
    summary = rank_summary(rank_score, ref.ideal.gains, k=ref.ideal.top_indices.shape[-1])
    if spearman and ref.ranks is None:
        raise ValueError("rank_metrics(spearman=True) needs a reference with ranks")
    return summary_metrics(summary, ref, ks=ks, key=rank_score if spearman else None)


def score_metrics(
    score: Float[Tensor, "n_positions d_vocab"],
    q_logits: Float[Tensor, "n_positions d_vocab"],
    ref: Reference,
    *,
    ks: list[int | None],
    jsd_base: str = "nats",
    spearman: bool = True,
) -> dict[str, Float[Tensor, "n_positions"]]:
    """`rank_metrics` of ``score`` plus jsd = JSD(p ‖ softmax(q_logits)) (q_logits = the
    score's distribution, see `geomlens.geometry.scores`)."""
    out = rank_metrics(score, ref, ks=ks, spearman=spearman)
    logp = ref.logits - ref.lse
    out["jsd"] = js_divergence_fast(ref.p, logp, q_logits.float(), base=jsd_base)
    return out


def all_score_metrics(
    parts: ScoreParts,
    names: list[str],
    ref: Reference,
    *,
    ks: list[int | None],
    jsd_base: str = "nats",
    spearman: bool = True,
    perm: Int[Tensor, "d_vocab"] | None = None,
) -> Metrics:
    """`score_metrics` of every named score, directly from the materialized scores; scores of
    one rank group share one ranking computation. ``perm`` shuffles the vocabulary rows (token
    v gets row perm[v]'s score)."""
    shuffle = (lambda t: t) if perm is None else (lambda t: t[:, perm])
    ranked: dict[str, dict[str, Tensor]] = {}
    out: Metrics = {}
    logp = ref.logits - ref.lse
    for name, group in rank_groups(names).items():
        spec = get_score(name)
        if group not in ranked:
            ranked[group] = rank_metrics(shuffle(spec.ranking(parts)), ref, ks=ks,
                                         spearman=spearman)
        q_logits = shuffle(spec.q_logits(spec.score(parts)))
        out[name] = {**ranked[group],
                     "jsd": js_divergence_fast(ref.p, logp, q_logits.float(), base=jsd_base)}
    return out
