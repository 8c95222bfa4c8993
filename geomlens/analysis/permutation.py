"""The permutation test of the rank metrics with many permutations (default 999), fast.

Permutation i shuffles the rows of the target matrix: token v gets the score of token
perm_i[v]. NDCG(score[:, perm], p) = NDCG(score, p[:, perm⁻¹]) and the ideal DCG does not
depend on the permutation, so the score's top-K and its tail buckets, computed once for the
observed metrics, serve every permutation: each one only gathers gains (`native/permnull.c`
has the arithmetic; `_null_torch` is the same in torch).

    NDCG@k (k <= K), top-1, top-10   exact
    NDCG@full                        the midpoint of a bracket: p's K heaviest tokens are placed
                                     in their exact score bucket, the rest of the gain mass only
                                     between ranks K+1 and V; the half-width is ndcg_full_err
    JSD, Spearman                    left out (each needs a pass over the vocabulary per
                                     permutation; the random-matrix control keeps JSD)

The control rows of a batch are buffered (gains, and one byte per token and rank group for the
bucket map) and the null is computed for all permutations at the end of the batch, in blocks of
`BLOCK` permutations drawn by `perm_tables` (the same permutations in every batch).
"""

from __future__ import annotations

import ctypes
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from geomlens import native
from geomlens.analysis.metrics import Reference, ScoredPair, ndcg_name, rank_groups
from geomlens.metrics.ranking import discounts, ndcg_interval, ndcg_ratio
from geomlens.metrics.selection import N_BUCKETS, bucket_index

BLOCK = 16
"""Permutations per pass over the buffered rows (one 64-byte cache line of int32 indices)."""
TOP = 255
"""Bucket-map code of the score's top-K tokens."""


def perm_tables(seed: int, first: int, count: int, d_vocab: int) -> tuple[Tensor, Tensor, Tensor]:
    """Permutations ``first .. first + count - 1`` of ``seed`` as ``(perm [count, V], permT
    [V, count], pinvT [V, count])`` (int32). Native: Fisher-Yates on xoshiro256** seeded by
    (seed, index). Torch fallback: `torch.randperm` from a generator seeded by ``seed + index``
    (other permutations, the same distribution)."""
    lib = native.library("permnull")
    if lib is not None:
        permT = torch.empty(d_vocab, count, dtype=torch.int32)
        pinvT, perm = torch.empty_like(permT), torch.empty(count, d_vocab, dtype=torch.int32)
        code = lib.perm_tables(ctypes.c_uint64(seed), ctypes.c_int64(first), ctypes.c_int64(count),
                               ctypes.c_int64(d_vocab), native.ptr(permT), native.ptr(pinvT),
                               native.ptr(perm))
        if code:
            raise MemoryError("perm_tables: out of memory")
        return perm, permT, pinvT
    perm = torch.stack([torch.randperm(d_vocab, generator=torch.Generator().manual_seed(seed + i))
                        for i in range(first, first + count)]).int()
    pinv = torch.empty_like(perm).scatter_(1, perm.long(), torch.arange(d_vocab, dtype=torch.int32)
                                           .expand_as(perm).contiguous())
    return perm, perm.T.contiguous(), pinv.T.contiguous()


@dataclass
class _Rows:
    """Buffered control rows: lists of per-chunk tensors, concatenated at the end."""

    parts: dict[str, list[Tensor]] = field(default_factory=lambda: defaultdict(list))

    def add(self, **tensors: Tensor) -> None:
        for name, t in tensors.items():
            self.parts[name].append(t)

    def cat(self) -> dict[str, Tensor]:
        return {name: torch.cat(ts).contiguous() for name, ts in self.parts.items()}


class PermutationNull:
    """Collects the control rows of a batch; `finish` yields the null sums of the rank metrics."""

    def __init__(self, n_permutations: int, *, seed: int, ks: list[int | None]) -> None:
        self.n_permutations, self.seed, self.ks = n_permutations, seed, ks
        self.ref = _Rows()
        self.groups: dict[tuple[str, str, str], _Rows] = {}
        self.members: dict[tuple[str, str, str], list[str]] = {}

    def add_reference(self, ref: Reference) -> None:
        """p's side of the control rows of a chunk (``ref`` restricted to them)."""
        i = ref.ideal
        self.ref.add(gains=i.gains, total=i.total, heavy=i.top_indices, prefix=i.prefix,
                     idcg_lo=i.prefix[:, -1] + i.rest_lo, idcg_hi=i.prefix[:, -1] + i.rest_hi)

    def add_pair(self, hidden: str, target: str, scored: ScoredPair, n_rows: int) -> None:
        """The rank groups of one (hidden, target) pair on the first ``n_rows`` rows."""
        group_of = rank_groups(list(scored.metrics))
        for group in scored.summaries:
            self.members[(hidden, target, group)] = [n for n, g in group_of.items() if g == group]
        for group, s in scored.summaries.items():
            first = slice(0, n_rows)
            top = s.top_indices[first]
            bucket = bucket_index(scored.keys[group][first].float(), s.low[first], s.scale[first],
                                  N_BUCKETS).to(torch.uint8)
            bucket.scatter_(1, top, TOP)
            above = s.count[first].flip(-1).cumsum(-1).flip(-1) - s.count[first]
            k = top.shape[-1]
            first_rank = torch.clamp(above + 1, min=k + 1)
            last_rank = torch.maximum(above + s.count[first], first_rank)
            rows = self.groups.setdefault((hidden, target, group), _Rows())
            rows.add(top=top, bucket=bucket, d_lo=1.0 / torch.log2(last_rank + 1),
                     d_hi=1.0 / torch.log2(first_rank + 1))

    def finish(self) -> Iterator[tuple[str, str, str, dict[str, np.ndarray], int]]:
        """``(hidden, target, score, {metric: sum over the rows, one per permutation}, n_rows)``
        for every score, then empties the buffer."""
        if not self.groups or self.n_permutations == 0:
            return
        ref = self.ref.cat()
        groups = {key: rows.cat() for key, rows in self.groups.items()}
        n_rows, d_vocab = ref["gains"].shape
        sums = {key: defaultdict(lambda: np.zeros(self.n_permutations)) for key in groups}
        for first in range(0, self.n_permutations, BLOCK):
            count = min(BLOCK, self.n_permutations - first)
            _, permT, pinvT = perm_tables(self.seed, first, count, d_vocab)
            for key, rows in groups.items():
                for metric, values in self._block(ref, rows, permT, pinvT).items():
                    sums[key][metric][first:first + count] = values.sum(0).double().numpy()
        self.ref, self.groups = _Rows(), {}
        for (hidden, target, group), s in sums.items():
            for name in self.members[(hidden, target, group)]:
                yield hidden, target, name, dict(s), n_rows

    def _block(self, ref: dict[str, Tensor], rows: dict[str, Tensor], permT: Tensor,
               pinvT: Tensor) -> dict[str, Tensor]:
        """Per (row, permutation) metrics of one block of permutations, one rank group."""
        d_vocab, count = permT.shape
        k = rows["top"].shape[-1]
        kcut = sorted({kk for kk in self.ks if kk is not None and kk < d_vocab})
        out = null_terms(ref, rows, permT, pinvT, kcut)
        metrics = {ndcg_name(kk): ndcg_ratio(out["dcg_k"][..., c], ref["prefix"][:, kk - 1, None])
                   for c, kk in enumerate(kcut)}
        full = [kk for kk in self.ks if kk is None or kk >= d_vocab]
        if full:
            mid, half = ndcg_interval(out["dcg_top"] + out["tail_lo"], out["dcg_top"] + out["tail_hi"],
                                      ref["idcg_lo"][:, None], ref["idcg_hi"][:, None])
            if k >= d_vocab:  # the top K is the whole vocabulary: exact
                mid, half = ndcg_ratio(out["dcg_top"], ref["prefix"][:, -1, None]), half * 0
            metrics.update({ndcg_name(kk): mid for kk in full})
            metrics["ndcg_full_err"] = half
        metrics["top1"], metrics["top10"] = out["top1"], out["top10"]
        return metrics


def null_terms(ref: dict[str, Tensor], rows: dict[str, Tensor], permT: Tensor, pinvT: Tensor,
               kcut: list[int]) -> dict[str, Tensor]:
    """The raw per (row, permutation) sums (see `native/permnull.c`): dcg_k [n, P, len(kcut)],
    dcg_top, tail_lo, tail_hi, top1, top10 [n, P]."""
    n_rows, d_vocab = ref["gains"].shape
    count, k = permT.shape[1], rows["top"].shape[-1]
    lib = native.library("permnull")
    args = dict(gains=ref["gains"], total=ref["total"], heavy=ref["heavy"], top=rows["top"],
                bucket=rows["bucket"], d_lo=rows["d_lo"], d_hi=rows["d_hi"])
    if lib is None or not native.usable(*args.values()):
        return _null_torch(permT, pinvT, kcut=kcut, **args)
    f32 = dict(dtype=torch.float32)
    out = {"dcg_k": torch.zeros(n_rows, count, max(1, len(kcut)), **f32),
           **{name: torch.empty(n_rows, count, **f32)
              for name in ("dcg_top", "tail_lo", "tail_hi", "top1", "top10")}}
    cuts = torch.tensor(kcut or [0], dtype=torch.int64)
    disc = discounts(k)
    i64 = ctypes.c_int64
    native.run_rows(lambda r0, r1: lib.perm_null_rows(
        i64(r0), i64(r1), i64(d_vocab), i64(k), i64(count), i64(rows["d_lo"].shape[-1]),
        native.ptr(permT), native.ptr(pinvT), *map(native.ptr, args.values()), native.ptr(disc),
        native.ptr(cuts), i64(len(kcut)), *map(native.ptr, out.values())), n_rows)
    return out


def _null_torch(permT: Tensor, pinvT: Tensor, *, gains: Tensor, total: Tensor, heavy: Tensor,
                top: Tensor, bucket: Tensor, d_lo: Tensor, d_hi: Tensor,
                kcut: list[int]) -> dict[str, Tensor]:
    """`null_terms` in torch (no compiler, or tensors on a GPU)."""
    d_vocab, count = permT.shape
    k = top.shape[-1]
    src = pinvT.to(top.device).long()[top]  # [n, K, P]: the token in slot j
    g_slot = gains.gather(1, src.flatten(1)).view_as(src)
    disc = discounts(k, device=gains.device)[None, :, None]
    dcg = (g_slot * disc).cumsum(1)
    dst = permT.to(top.device).long()[heavy]  # [n, K, P]: where p's heavy token lands
    b = bucket.gather(1, dst.flatten(1)).view_as(dst).long()
    in_tail = b != TOP
    bb = b.clamp_max(d_lo.shape[-1] - 1)
    gh = gains.gather(1, heavy)[:, :, None] * in_tail
    lo = (gh * d_lo.gather(1, bb.flatten(1)).view_as(bb)).sum(1)
    hi = (gh * d_hi.gather(1, bb.flatten(1)).view_as(bb)).sum(1)
    light = (total[:, None] - g_slot.sum(1) - gh.sum(1)).clamp_min(0)
    k10 = min(10, k)
    hits = (src[:, :k10, None, :] == heavy[:, None, :k10, None]).any(2).float().sum(1)
    return {
        "dcg_k": dcg[:, [c - 1 for c in kcut] or [0], :].transpose(1, 2),
        "dcg_top": dcg[:, -1], "top1": (src[:, 0] == heavy[:, :1]).float(), "top10": hits / k10,
        "tail_lo": lo + light / np.log2(d_vocab + 1), "tail_hi": hi + light / np.log2(k + 2),
    }
