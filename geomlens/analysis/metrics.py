"""Per-position metrics of one vocabulary score against the LM head's distribution p.

`reference` precomputes everything that depends on p only (log p, the ideal DCG prefix and
bracket, p's top tokens, p's ranks), once per chunk of positions; `score_metrics` then needs one
top-K, one log-softmax and (optionally) one sort of the score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.geometry.scores import ScoreParts, get_score
from geomlens.metrics.correlation import centered_ranks, spearman_from_ranks
from geomlens.metrics.divergence import js_divergence_fast
from geomlens.metrics.ranking import IdealDCG, ideal_dcg, ndcg_topk, overlap_at_k

#: metric name -> True if larger means closer agreement with p (direction of the permutation test)
GREATER_IS_BETTER: dict[str, bool] = {"jsd": False}


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


@dataclass
class Reference:
    """Quantities of p shared by every score at the same positions."""

    logp: Float[Tensor, "n_positions d_vocab"]
    """log p (log-softmax of the LM logits)."""
    p: Float[Tensor, "n_positions d_vocab"]
    """p."""
    sum_plogp: Float[Tensor, "n_positions"]
    """Σ p log p (minus the entropy)."""
    ideal: IdealDCG
    """Ideal DCG of relevance p (top-K of p, prefix sums, bracket on the rest)."""
    ranks: Float[Tensor, "n_positions d_vocab"] | None
    """Centered average ranks of p (None when Spearman is off)."""

    def head(self, n_positions: int) -> Reference:
        """The same reference restricted to the first ``n_positions`` positions."""
        first, i = slice(0, n_positions), self.ideal
        return Reference(
            logp=self.logp[first], p=self.p[first], sum_plogp=self.sum_plogp[first],
            ideal=IdealDCG(
                gains=i.gains[first], total=i.total[first], top_indices=i.top_indices[first],
                prefix=i.prefix[first], rest_lo=i.rest_lo[first], rest_hi=i.rest_hi[first],
            ),
            ranks=None if self.ranks is None else self.ranks[first],
        )


def reference(
    logits: Float[Tensor, "n_positions d_vocab"], *, topk: int, gain: str, spearman: bool
) -> Reference:
    """Precompute the p side of every metric from the LM logits."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    k_eff = max(min(topk, logits.shape[-1]), min(10, logits.shape[-1]))
    return Reference(
        logp=logp, p=p, sum_plogp=torch.xlogy(p, p).sum(-1),
        ideal=ideal_dcg(p, topk=k_eff, gain=gain),
        ranks=centered_ranks(logp) if spearman else None,
    )


def rank_metrics(
    rank_score: Float[Tensor, "n_positions d_vocab"],
    ref: Reference,
    *,
    ks: list[int | None],
    spearman: bool = True,
) -> dict[str, Float[Tensor, "n_positions"]]:
    """The metrics that depend only on the ranking: ndcg@k, spearman (rho(score, p) over the
    vocabulary), top1 (argmax score == argmax p), top10 (|top10(score) ∩ top10(p)| / 10), plus
    ``ndcg_full_err`` (the NDCG@full error bound)."""
    rank_score = rank_score.float()
    k_eff = ref.ideal.top_indices.shape[-1]
    top = rank_score.topk(k_eff, dim=-1).indices
    nd = ndcg_topk(rank_score, ref.ideal, ks=ks, score_top_indices=top)
    out: dict[str, Tensor] = {ndcg_name(k): v for k, v in nd.values.items()}
    if spearman:
        if ref.ranks is None:
            raise ValueError("rank_metrics(spearman=True) needs a reference with ranks")
        out["spearman"] = spearman_from_ranks(centered_ranks(rank_score), ref.ranks)
    out["top1"] = (top[:, 0] == ref.ideal.top_indices[:, 0]).float()
    k10 = min(10, k_eff)
    out["top10"] = overlap_at_k(top[:, :k10], ref.ideal.top_indices[:, :k10])
    out["ndcg_full_err"] = nd.full_error_bound
    return out


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
    out["jsd"] = js_divergence_fast(ref.p, ref.sum_plogp, q_logits.float(), base=jsd_base)
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
) -> dict[str, dict[str, Float[Tensor, "n_positions"]]]:
    """`score_metrics` of every named score; scores of one rank group share one ranking
    computation. ``perm`` shuffles the vocabulary rows (token v gets row perm[v]'s score)."""
    shuffle = (lambda t: t) if perm is None else (lambda t: t[:, perm])
    ranked: dict[str, dict[str, Tensor]] = {}
    out: dict[str, dict[str, Tensor]] = {}
    for name in names:
        spec = get_score(name)
        group = spec.rank_group or name
        if group not in ranked:
            ranked[group] = rank_metrics(shuffle(spec.ranking(parts)), ref, ks=ks,
                                         spearman=spearman)
        q_logits = shuffle(spec.q_logits(spec.score(parts)))
        jsd = js_divergence_fast(ref.p, ref.sum_plogp, q_logits.float(), base=jsd_base)
        out[name] = {**ranked[group], "jsd": jsd}
    return out
