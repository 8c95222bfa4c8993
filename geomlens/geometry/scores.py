"""Vocabulary scores derived from the geometry of h and the target matrix, by name.

Every score is a function of `ScoreParts` (the dot products ``h·e`` and squared distances
``‖h − e‖²`` of one chunk of positions against the whole vocabulary) and returns one score per
token, higher = closer/more likely, used for the rankings (NDCG, Spearman, top-k). Each score
also defines the distribution q compared with p by the JSD, as logits (q = softmax(logits)):

    name              ranking score          distribution q
    inv_dist          1 / (d + eps)          q ∝ 1/(d + eps)          eq. 5.1 (logits log(1/(d+eps)))
    softmax_inv_dist  1 / (d + eps)          q = softmax(1/(d + eps))  eq. 5.2
    neg_dist          −d                     softmax(−d)
    neg_sq_dist       −d²                    softmax(−d²)
    cosine            h·e / (‖h‖ ‖e‖)       softmax(cosine)   (cosine is 0 where a norm is 0)
    dot               h·e                    softmax(h·e)      (= the LM distribution when the
                                                                target is W_U, or W_E tied to it,
                                                                and b_U = 0)

inv_dist, softmax_inv_dist, neg_dist and neg_sq_dist are decreasing functions of d, so they rank
the vocabulary identically (rank group "distance", keyed by −d², which has no rounding ties);
they differ only in q.

``eps`` (default `DEFAULT_EPS` = 1e-6) makes d = 0 give the finite score 1e6 instead of Inf;
it is far below the distances seen in practice (order 1–100), so it changes no ranking.

Add a score with one call, ``register_score("name", fn, help="one-line definition")``;
duplicates raise. Nothing else needs an edit: the CLI, the config and summary.json read `SCORES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from geomlens.geometry.distances import dot_and_sq_dist, row_sq_norms
from geomlens.registry import Registry

DEFAULT_EPS = 1e-6
"""Added to the distance in inv_dist / softmax_inv_dist: 1/(0 + 1e-6) = 1e6 is finite."""


@dataclass
class ScoreParts:
    """Geometry of n_positions hidden states against a vocabulary matrix, shared by all scores."""

    dot: Float[Tensor, "n_positions d_vocab"]
    """h·e_v."""
    sq_dist: Float[Tensor, "n_positions d_vocab"]
    """‖h − e_v‖², clamped at 0."""
    h_norm: Float[Tensor, "n_positions"]
    """‖h‖."""
    e_norm: Float[Tensor, "d_vocab"]
    """‖e_v‖."""
    eps: float = DEFAULT_EPS
    """Added to d in the inverse-distance scores."""
    _dist: Tensor | None = field(default=None, repr=False)
    _inv: Tensor | None = field(default=None, repr=False)

    @property
    def dist(self) -> Float[Tensor, "n_positions d_vocab"]:
        """‖h − e_v‖ (computed once, on first use)."""
        if self._dist is None:
            self._dist = self.sq_dist.sqrt()
        return self._dist


def score_parts(
    h: Float[Tensor, "n_positions d_model"],
    targets: Float[Tensor, "d_vocab d_model"],
    *,
    targets_sq: Float[Tensor, "d_vocab"] | None = None,
    eps: float = DEFAULT_EPS,
    vocab_chunk: int | None = None,
) -> ScoreParts:
    """Compute the dot products and squared distances of ``h`` to every row of ``targets``."""
    if targets_sq is None:
        targets_sq = row_sq_norms(targets)
    dot, sq = dot_and_sq_dist(h, targets, targets_sq=targets_sq, vocab_chunk=vocab_chunk)
    return ScoreParts(
        dot=dot, sq_dist=sq, h_norm=h.norm(dim=-1), e_norm=targets_sq.sqrt(), eps=eps
    )


ScoreFn = Callable[[ScoreParts], Float[Tensor, "n_positions d_vocab"]]
LogitsFn = Callable[[Float[Tensor, "n_positions d_vocab"]], Float[Tensor, "n_positions d_vocab"]]


@dataclass(frozen=True)
class ScoreSpec:
    """A registered score: how to rank the vocabulary and which distribution it implies."""

    score: ScoreFn
    """ScoreParts -> ranking score (higher = ranked first)."""
    logits: LogitsFn | None = None
    """ranking score -> logits of the distribution q (None = the score itself: q = softmax)."""
    rank_group: str | None = None
    """Scores with the same group rank the vocabulary identically (monotone transforms of each
    other), so rank metrics are computed once per group (None = its own group)."""
    rank_key: ScoreFn | None = None
    """The group's canonical ranking key (None = the score itself)."""
    proportional: bool = False
    """q ∝ the score itself (a positive score, ``logits`` = log): the fused analysis then
    normalizes q by a sum, with no exp or log per token."""

    def q_logits(self, score: Tensor) -> Tensor:
        return score if self.logits is None else self.logits(score)

    def ranking(self, parts: ScoreParts) -> Tensor:
        """A key that ranks the vocabulary exactly like the score."""
        return (self.rank_key or self.score)(parts)


SCORES: Registry[ScoreSpec] = Registry("score")
"""Every score by name: the choices of ``--scores``, the rows of summary.json, its definitions."""


def register_score(
    name: str,
    fn: ScoreFn,
    *,
    help: str,
    logits: LogitsFn | None = None,
    rank_group: str | None = None,
    rank_key: ScoreFn | None = None,
    proportional: bool = False,
) -> ScoreSpec:
    """Register a score by name with a one-line definition (see `ScoreSpec` for the options);
    a duplicate name raises. This one call makes it a choice of ``geomlens analyze --scores``,
    part of the default analysis, and a row of summary.json."""
    if proportional and logits is None:
        logits = _log_score
    return SCORES.register(name, ScoreSpec(fn, logits, rank_group, rank_key, proportional),
                           help=help)


def get_score(name: str) -> ScoreSpec:
    """The registered score ``name`` (an unknown name raises, naming the closest)."""
    return SCORES.get(name)


def _inv_dist(parts: ScoreParts) -> Tensor:
    if parts._inv is None:  # shared by inv_dist and softmax_inv_dist
        parts._inv = (parts.dist + parts.eps).reciprocal_()
    return parts._inv


def _neg_dist(parts: ScoreParts) -> Tensor:
    return -parts.dist


def _neg_sq_dist(parts: ScoreParts) -> Tensor:
    return -parts.sq_dist


def _cosine(parts: ScoreParts) -> Tensor:
    denom = parts.h_norm[:, None] * parts.e_norm[None, :]
    return torch.where(denom > 0, parts.dot / denom.clamp_min(1e-30), torch.zeros_like(denom))


def _dot(parts: ScoreParts) -> Tensor:
    return parts.dot


def _log_score(score: Tensor) -> Tensor:
    return torch.log(score)


# the four distance scores are decreasing functions of d: one ranking, keyed by −d² (exact)
_DIST = dict(rank_group="distance", rank_key=_neg_sq_dist)
register_score("inv_dist", _inv_dist, proportional=True, **_DIST,
               help="rank by 1/(d+eps); q proportional to 1/(d+eps) (eq. 5.1)")
register_score("softmax_inv_dist", _inv_dist, **_DIST,
               help="rank by 1/(d+eps); q = softmax(1/(d+eps)) (eq. 5.2)")
register_score("neg_dist", _neg_dist, **_DIST, help="-d; q = softmax(-d)")
register_score("neg_sq_dist", _neg_sq_dist, **_DIST, help="-d^2; q = softmax(-d^2)")
register_score("cosine", _cosine, help="h.e/(|h||e|) (0 where a norm is 0); q = softmax(cosine)")
register_score("dot", _dot, help="h.e; q = softmax(h.e) (the LM head itself for W_U, b_U = 0)")


def compute_scores(
    parts: ScoreParts, names: list[str] | tuple[str, ...] | None = None
) -> dict[str, Float[Tensor, "n_positions d_vocab"]]:
    """Every requested ranking score (None = all registered), by name."""
    return {name: get_score(name).score(parts) for name in (names or SCORES.names())}


def score_distribution(
    parts: ScoreParts, name: str
) -> Float[Tensor, "n_positions d_vocab"]:
    """The distribution q of a score (sums to 1 over the vocabulary)."""
    spec = get_score(name)
    return torch.softmax(spec.q_logits(spec.score(parts)), dim=-1)
