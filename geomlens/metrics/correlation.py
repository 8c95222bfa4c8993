"""Spearman rank correlation over the vocabulary, with scipy's tie handling (average ranks).

Spearman's rho is the Pearson correlation of the two rank vectors. One sort per row gives the
ordinal ranks; tied values then share the average of their ranks, exactly like
``scipy.stats.rankdata(method="average")`` (ties are rare for float scores but do occur, e.g.
for duplicated embedding rows).
"""

from __future__ import annotations

import ctypes

import torch
from jaxtyping import Float
from torch import Tensor

from geomlens import native


def average_ranks(x: Float[Tensor, "n_positions d_vocab"]) -> Float[Tensor, "n_positions d_vocab"]:
    """1-based ranks along the last dim (ascending), ties get their average rank.

    float32 (half-integers are exact in float32 below 2^23 tokens)."""
    sorted_vals, order = x.sort(dim=-1)
    n_positions, d_vocab = x.shape
    pos = torch.arange(d_vocab, device=x.device).expand(n_positions, d_vocab)
    starts = torch.ones(n_positions, d_vocab, dtype=torch.bool, device=x.device)
    starts[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    if bool(starts.all()):
        ranks_sorted = (pos + 1).to(torch.float32)
    else:
        ends = torch.ones_like(starts)
        ends[:, :-1] = starts[:, 1:]
        first = torch.where(starts, pos, torch.zeros_like(pos)).cummax(-1).values
        after = torch.where(ends, pos, torch.full_like(pos, d_vocab))
        last = after.flip(-1).cummin(-1).values.flip(-1)
        ranks_sorted = (first + last).to(torch.float32) / 2 + 1
    return torch.empty_like(ranks_sorted).scatter_(-1, order, ranks_sorted)


def pearson(
    a: Float[Tensor, "n_positions d_vocab"], b: Float[Tensor, "n_positions d_vocab"]
) -> Float[Tensor, "n_positions"]:
    """Pearson correlation of each row pair (float64; NaN for a constant row)."""
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.pow(2).sum(-1) * b.pow(2).sum(-1)).sqrt()


def centered_ranks(x: Float[Tensor, "n_positions d_vocab"]) -> Float[Tensor, "n_positions d_vocab"]:
    """`average_ranks` minus their mean (V+1)/2, which is exact with or without ties.

    On CPU with a C++ compiler a radix sort computes them (`geomlens.native`, ``ranks.cpp``; the
    same values, ~30x faster than `torch.sort`)."""
    lib = native.library("ranks")
    if lib is not None and x.dtype == torch.float32 and native.usable(x) and x.numel():
        out = torch.empty_like(x)
        native.run_rows(lambda r0, r1: lib.centered_ranks_rows(
            native.ptr(x), ctypes.c_int64(r0), ctypes.c_int64(r1), ctypes.c_int64(x.shape[-1]),
            native.ptr(out)), x.shape[0])
        return out
    return average_ranks(x).sub_((x.shape[-1] + 1) / 2)


def spearman_from_ranks(
    centered_a: Float[Tensor, "n_positions d_vocab"],
    centered_b: Float[Tensor, "n_positions d_vocab"],
) -> Float[Tensor, "n_positions"]:
    """Spearman's rho from `centered_ranks` (float32 dot products; |error| ~1e-5)."""
    dot = torch.linalg.vecdot  # row-wise; einsum("nv,nv->n") is 16x slower on a CPU
    num = dot(centered_a, centered_b)
    den = (dot(centered_a, centered_a) * dot(centered_b, centered_b)).sqrt()
    return num / den


def spearman(
    a: Float[Tensor, "*batch d_vocab"], b: Float[Tensor, "*batch d_vocab"]
) -> Float[Tensor, "*batch"]:
    """Spearman's rho between ``a`` and ``b`` along the last dim (scipy ``spearmanr`` per row)."""
    d_vocab = a.shape[-1]
    flat_a, flat_b = a.reshape(-1, d_vocab), b.reshape(-1, d_vocab)
    rho = pearson(average_ranks(flat_a), average_ranks(flat_b)).float()
    return rho.reshape(a.shape[:-1])
