"""Per-row top-K selection and the tail buckets that bracket NDCG@full.

`count_above(values, thresholds)` counts the entries above given values (exact ranks).
`rank_summary(values, gains, k=K)` gives, for every row of a ``[n_positions, d_vocab]`` matrix,
the K best entries (best first) and the tail buckets: ``n_buckets`` equal-width bins of the
values between the row minimum and the K-th best value, with the exact number of entries and
the sum of the gains of the entries outside the top K in each. `bucket_bounds` turns the
buckets into a rigorous bracket on Σ_{rank > K} gain / log2(rank + 1) (see
`geomlens.metrics.ranking`).

Ties are broken by the smaller index (`top_k`), and the gains are summed in float64. On a CPU
with a C++ compiler, the native code (`geomlens.native`, ``rank.cpp``) reads each row once;
otherwise `top_k` and `scatter_add_` compute the same summary.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int, UInt8
from torch import Tensor

from geomlens import native

N_BUCKETS = 64
"""Tail buckets per row (the bracket's resolution)."""


@dataclass
class RankSummary:
    """The K best entries of each row and its tail buckets."""

    top_values: Float[Tensor, "n_positions k"]
    """The K best values, best first."""
    top_indices: Int[Tensor, "n_positions k"]
    """Their columns."""
    low: Float[Tensor, "n_positions 1"]
    """Row minimum (the bottom of bucket 0)."""
    scale: Float[Tensor, "n_positions 1"]
    """n_buckets / (K-th best − minimum); 0 when not finite."""
    count: Float[Tensor, "n_positions n_buckets"]
    """Entries per bucket (all of them, the top K included: they sit in the top bucket)."""
    tail_gains: Float[Tensor, "n_positions n_buckets"]
    """Sum of the gains of the entries outside the top K, per bucket."""


def bucket_index(
    values: Float[Tensor, "n_positions n"], low: Float[Tensor, "n_positions 1"],
    scale: Float[Tensor, "n_positions 1"], n_buckets: int = N_BUCKETS,
) -> Int[Tensor, "n_positions n"]:
    """The bucket of each value: trunc(clamp((value − low) · scale, 0, n_buckets − 1))."""
    return (values - low).mul_(scale).clamp_(0, n_buckets - 1).long()


def bucket_codes(
    values: Float[Tensor, "n_positions n"], low: Float[Tensor, "n_positions 1"],
    scale: Float[Tensor, "n_positions 1"], n_buckets: int = N_BUCKETS,
) -> UInt8[Tensor, "n_positions n"]:
    """`bucket_index` as one byte per entry (``n_buckets`` ≤ 256): one native pass over
    ``values`` where the native code is available, else torch (the same bytes)."""
    lib = native.library("rank")
    if lib is None or values.dtype != torch.float32 or n_buckets > 256 \
            or not native.usable(values, low, scale):
        return bucket_index(values, low, scale, n_buckets).to(torch.uint8)
    n, width = values.shape
    out = torch.empty(n, width, dtype=torch.uint8)
    i64 = ctypes.c_int64
    native.run_rows(lambda r0, r1: lib.bucket_codes(
        native.ptr(values), i64(r0), i64(r1), i64(width), native.ptr(low), native.ptr(scale),
        i64(n_buckets), native.ptr(out)), n)
    return out


def rank_summary(
    values: Float[Tensor, "n_positions d_vocab"],
    gains: Float[Tensor, "n_positions d_vocab"],
    *,
    k: int,
    n_buckets: int = N_BUCKETS,
) -> RankSummary:
    """Top-``k`` entries and tail buckets of every row of ``values`` (``gains`` are summed)."""
    k = min(k, values.shape[-1])
    lib = native.library("rank")
    if lib is not None and values.dtype == gains.dtype == torch.float32 \
            and native.usable(values, gains):
        return _native(lib, values, gains, k, n_buckets)
    return _torch(values, gains, k, n_buckets)


def top_k(
    values: Float[Tensor, "n_positions d_vocab"], k: int
) -> tuple[Float[Tensor, "n_positions k"], Int[Tensor, "n_positions k"]]:
    """The ``k`` best entries of every row, best first, "better" being the larger value, then
    the smaller index: a strict total order, so the result does not depend on how `torch.topk`
    breaks ties (which it leaves unspecified). No NaN in ``values``. One native pass per row
    where available (the top-K part of `rank_summary`), else torch: the same values and indices."""
    k = min(k, values.shape[-1])
    lib = native.library("rank")
    if lib is None or values.dtype != torch.float32 or not native.usable(values) or k < 1:
        return _torch_top_k(values, k)
    n, width = values.shape
    top_values = torch.empty(n, k, dtype=torch.float32)
    top_indices = torch.empty(n, k, dtype=torch.int64)
    i64 = ctypes.c_int64
    native.run_rows(lambda r0, r1: lib.topk_rows(
        native.ptr(values), i64(r0), i64(r1), i64(width), i64(k), native.ptr(top_values),
        native.ptr(top_indices)), n)
    return top_values, top_indices


def _torch_top_k(
    values: Float[Tensor, "n_positions d_vocab"], k: int
) -> tuple[Float[Tensor, "n_positions k"], Int[Tensor, "n_positions k"]]:
    top_values, top_indices = values.topk(k, dim=-1)
    kth = top_values[:, -1:]
    # rows with more entries equal to the k-th value than the top k holds: take the smallest
    # indices among them (a pass over the rows; the fix-up touches only those rows)
    ties = ((values == kth).sum(-1) > (top_values == kth).sum(-1)).nonzero()[:, 0]
    if len(ties):
        v, kv = values[ties], kth[ties]
        above, equal = v > kv, v == kv
        need = k - above.sum(-1, keepdim=True)
        take = above | (equal & (equal.cumsum(-1) <= need))
        top_indices[ties] = take.nonzero()[:, 1].view(len(ties), k)
        top_values[ties] = v.gather(1, top_indices[ties])
    order = top_indices.argsort(dim=-1, stable=True)  # index ascending, then value descending
    top_values, top_indices = top_values.gather(1, order), top_indices.gather(1, order)
    order = top_values.argsort(dim=-1, descending=True, stable=True)
    return top_values.gather(1, order), top_indices.gather(1, order)


def _torch(values: Tensor, gains: Tensor, k: int, n_buckets: int) -> RankSummary:
    top_values, top_indices = _torch_top_k(values, k)
    low = values.amin(-1, keepdim=True)
    scale = (n_buckets / (top_values[:, -1:] - low)).nan_to_num(0.0, posinf=0.0, neginf=0.0)
    bucket = bucket_index(values, low, scale, n_buckets)
    count = torch.zeros(values.shape[0], n_buckets, dtype=gains.dtype, device=gains.device)
    count.scatter_add_(1, bucket, torch.ones_like(gains))
    g_sum = torch.zeros(values.shape[0], n_buckets, dtype=torch.float64, device=gains.device)
    g_sum.scatter_add_(1, bucket, gains.double())  # float64: the sums of many small gains
    return RankSummary(top_values, top_indices, low, scale, count,
                       _minus_top(g_sum, top_values, top_indices, gains, low, scale, n_buckets))


def _minus_top(g_sum: Tensor, top_values: Tensor, top_indices: Tensor, gains: Tensor,
               low: Tensor, scale: Tensor, n_buckets: int) -> Tensor:
    """The float64 bucket sums without the top K's gains (they are ranked exactly), clamped at
    0 and rounded to the gains' dtype: the last step of both paths."""
    top_bucket = bucket_index(top_values, low, scale, n_buckets)
    g_sum.scatter_add_(1, top_bucket, -gains.gather(1, top_indices).double())
    return g_sum.clamp_min_(0.0).to(gains.dtype)


def _native(lib, values: Tensor, gains: Tensor, k: int, n_buckets: int) -> RankSummary:
    n, d_vocab = values.shape
    f32, i64, f64 = dict(dtype=torch.float32), dict(dtype=torch.int64), dict(dtype=torch.float64)
    top_values, top_indices = torch.empty(n, k, **f32), torch.empty(n, k, **i64)
    low, high, scale = torch.empty(n, 1, **f32), torch.empty(n, 1, **f32), torch.empty(n, 1, **f32)
    count, g_sum = torch.empty(n, n_buckets, **i64), torch.empty(n, n_buckets, **f64)
    outs = [top_values, top_indices, low, high, scale, count, g_sum]
    native.run_rows(lambda r0, r1: lib.rank_rows(
        native.ptr(values), native.ptr(gains), *map(ctypes.c_int64, (r0, r1, d_vocab, k, n_buckets)),
        *map(native.ptr, outs)), n)
    return RankSummary(top_values, top_indices, low, scale, count.float(),
                       _minus_top(g_sum, top_values, top_indices, gains, low, scale, n_buckets))


def count_above(
    values: Float[Tensor, "n_positions d_vocab"],
    thresholds: Float[Tensor, "n_positions n_thresholds"],
    *,
    below: bool = False,
) -> Int[Tensor, "n_positions n_thresholds"]:
    """The number of entries of each row strictly above each of its thresholds (strictly below
    with ``below``): the 0-based rank of a token whose value is the threshold, ties sharing the
    better rank. One native read per row and threshold where available, else
    ``(values > thresholds[:, t:t+1]).sum(-1)`` (the same integers). At most 8 thresholds."""
    lib = native.library("rank")
    n, n_t = thresholds.shape
    thresholds = thresholds.to(values.dtype).contiguous()
    if lib is None or values.dtype != torch.float32 or n_t > 8 \
            or not native.usable(values, thresholds):
        beyond = torch.lt if below else torch.gt
        return torch.stack([beyond(values, thresholds[:, t:t + 1]).sum(-1) for t in range(n_t)], -1)
    out = torch.empty(n, n_t, dtype=torch.int64)
    i64 = ctypes.c_int64
    native.run_rows(lambda r0, r1: lib.count_above_rows(
        native.ptr(values), i64(r0), i64(r1), i64(values.shape[1]), i64(n_t),
        native.ptr(thresholds), i64(int(below)), native.ptr(out)), n)
    return out


def bucket_bounds(
    count: Float[Tensor, "n_positions n_buckets"],
    tail_gains: Float[Tensor, "n_positions n_buckets"],
    k: int,
) -> tuple[Float[Tensor, "n_positions"], Float[Tensor, "n_positions"]]:
    """Lower and upper bounds of Σ_{rank > k} gain / log2(rank + 1) from the tail buckets.

    A token in a bucket with A tokens in better buckets and C in its own has a rank in
    [max(A+1, k+1), A+C], so the bucket's gain sum is bracketed by the discounts of those
    ranks (exact counts: the bounds hold for any data, ties inside a bucket included)."""
    above = count.flip(-1).cumsum(-1).flip(-1) - count  # tokens in better buckets
    first = torch.clamp(above + 1, min=k + 1)
    last = torch.maximum(above + count, first)
    lo = (tail_gains / torch.log2(last + 1)).sum(-1)
    hi = (tail_gains / torch.log2(first + 1)).sum(-1)
    return lo, hi
