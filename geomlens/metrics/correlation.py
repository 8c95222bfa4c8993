"""Spearman rank correlation over the vocabulary, with scipy's tie handling (average ranks).

Spearman's rho is the Pearson correlation of the two rank vectors. One sort per row gives the
ordinal ranks; tied values then share the average of their ranks, exactly like
``scipy.stats.rankdata(method="average")`` (ties are rare for float scores but do occur, e.g.
for duplicated embedding rows).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def average_ranks(x: Float[Tensor, "n d_vocab"]) -> Float[Tensor, "n d_vocab"]:
    """1-based ranks along the last dim (ascending), ties get their average rank (float64)."""
    sorted_vals, order = x.sort(dim=-1)
    n, vocab = x.shape
    pos = torch.arange(vocab, device=x.device).expand(n, vocab)
    starts = torch.ones(n, vocab, dtype=torch.bool, device=x.device)
    starts[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    if bool(starts.all()):
        ranks_sorted = (pos + 1).to(torch.float64)
    else:
        ends = torch.ones_like(starts)
        ends[:, :-1] = starts[:, 1:]
        first = torch.where(starts, pos, torch.zeros_like(pos)).cummax(-1).values
        last = torch.where(ends, pos, torch.full_like(pos, vocab)).flip(-1).cummin(-1).values.flip(-1)
        ranks_sorted = (first + last).to(torch.float64) / 2 + 1
    return torch.empty_like(ranks_sorted).scatter_(-1, order, ranks_sorted)


def pearson(a: Float[Tensor, "n d_vocab"], b: Float[Tensor, "n d_vocab"]) -> Float[Tensor, "n"]:
    """Pearson correlation of each row pair (float64; NaN for a constant row)."""
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.pow(2).sum(-1) * b.pow(2).sum(-1)).sqrt()


def spearman_from_ranks(
    ranks_a: Float[Tensor, "n d_vocab"], ranks_b: Float[Tensor, "n d_vocab"]
) -> Float[Tensor, "n"]:
    """Spearman's rho from precomputed `average_ranks` (reuse the reference's ranks)."""
    return pearson(ranks_a, ranks_b).float()


def spearman(
    a: Float[Tensor, "*batch d_vocab"], b: Float[Tensor, "*batch d_vocab"]
) -> Float[Tensor, "*batch"]:
    """Spearman's rho between ``a`` and ``b`` along the last dim (scipy ``spearmanr`` per row)."""
    vocab = a.shape[-1]
    flat_a, flat_b = a.reshape(-1, vocab), b.reshape(-1, vocab)
    rho = spearman_from_ranks(average_ranks(flat_a), average_ranks(flat_b))
    return rho.reshape(a.shape[:-1])
