"""The permutation test of the rank metrics with many permutations (default 999), fast.

Permutation i shuffles the rows of the target matrix: token v gets the score of token
perm_i[v]. NDCG(score[:, perm], p) = NDCG(score, p[:, perm⁻¹]) and the ideal DCG does not
depend on the permutation, so the score's top-K and its tail buckets, computed once for the
observed metrics, serve every permutation: each one only gathers gains (`_null_torch_block`
has the arithmetic; ``native/permnull.cpp`` is the same, bit for bit, where it is available).

    NDCG@k (k <= K), top-1, top-10   exact
    NDCG@full                        the midpoint of a bracket: ranks 1..Kx exact (Kx = the
                                     largest finite cut-off), p's K heaviest tokens elsewhere
                                     in their score bucket, the rest of the gain mass only
                                     between ranks Kx+1 and V; the half-width is ndcg_full_err
    JSD, Spearman                    left out (each needs a pass over the vocabulary per
                                     permutation; the random-matrix control keeps JSD)

The control rows of a batch are buffered (gains, and one byte per token and rank group for the
bucket map) and the null is computed for all permutations at the end of the batch, in blocks of
permutations drawn by `perm_tables` (the same permutations in every batch) whose tables fit in
`TABLE_BYTES`.
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
from geomlens.analysis.agreement import Reference, ScoredPair, ndcg_name, rank_groups
from geomlens.metrics.ranking import discounts, ndcg_interval, ndcg_ratio
from geomlens.metrics.selection import bucket_codes

TABLE_BYTES = 256 << 20
"""Memory for the permutation tables of one pass: S permutations x V tokens x 2 tables."""
TOP = 255
"""Bucket-map code of the score's tokens in the exact slots (ranks 1..Kx)."""
NEAR = 254
"""Bucket-map code of the score's top-K tokens below the exact slots (ranks Kx+1..K)."""
DRAW = 64
"""Permutations drawn per step of `perm_tables` (a [DRAW, V] int64 block)."""


def exact_slots(ks: list[int | None], k: int, d_vocab: int) -> int:
    """Kx: the ranks placed exactly in every permutation (the largest finite NDCG cut-off, at
    least 10 for top-10; at most K; all of them when K covers the vocabulary)."""
    if k >= d_vocab:
        return k
    finite = [kk for kk in ks if kk is not None and kk < d_vocab]
    return min(k, max([10, *finite]))


def table_dtype(d_vocab: int) -> torch.dtype:
    """The entries of the permutation tables: uint16 where token ids fit (V ≤ 65,536; half the
    bytes of int32 to write and to read), else int32."""
    return torch.uint16 if d_vocab <= 1 << 16 else torch.int32


def block_size(n_permutations: int, d_vocab: int) -> int:
    """Permutations per pass over the buffered rows (a multiple of 16 within `TABLE_BYTES`)."""
    entry = 2 * torch.empty(0, dtype=table_dtype(d_vocab)).element_size()  # two tables
    most = max(16, TABLE_BYTES // (entry * d_vocab) // 16 * 16)
    return min(most, -(-n_permutations // 16) * 16)


def perm_tables(gen: torch.Generator, count: int, d_vocab: int,
                workspace: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The next ``count`` permutations of ``gen`` (``torch.randperm`` on it, one after the other)
    as transposed tables ``(permT, pinvT)`` [V, count] of `table_dtype`: ``permT[v, i] =
    perm_i[v]``, ``pinvT[perm_i[v], i] = v``. ``workspace``: memory of that dtype for both tables
    (≥ 2·V·count entries), reused across calls; fresh memory costs about as much as drawing.

    The one place permutations are drawn: permutation i of a run is the i-th draw from a
    generator seeded with the run's seed, whatever reads the tables."""
    dtype = table_dtype(d_vocab) if workspace is None else workspace.dtype
    if workspace is None:
        workspace = torch.empty(2 * d_vocab * count, dtype=dtype)
    permT, pinvT = workspace[: 2 * d_vocab * count].view(2, d_vocab, count).unbind(0)
    tokens = torch.arange(d_vocab)
    for i in range(0, count, DRAW):
        n = min(DRAW, count - i)
        perms = torch.stack([torch.randperm(d_vocab, generator=gen) for _ in range(n)])
        inverse = torch.empty_like(perms).scatter_(1, perms, tokens.expand(n, -1))
        permT[:, i:i + n] = perms.to(dtype).T.contiguous()
        pinvT[:, i:i + n] = inverse.to(dtype).T.contiguous()
    return permT, pinvT


@dataclass
class _Rows:
    """Buffered control rows: lists of per-chunk tensors, concatenated at the end."""

    parts: dict[str, list[Tensor]] = field(default_factory=lambda: defaultdict(list))

    def add(self, **tensors: Tensor) -> None:
        for name, t in tensors.items():
            self.parts[name].append(t)

    def cat(self) -> dict[str, Tensor]:
        return {name: _cat_padded(ts) if ts[0].dtype == torch.uint8 else torch.cat(ts).contiguous()
                for name, ts in self.parts.items()}


def _cat_padded(parts: list[Tensor]) -> Tensor:
    """``torch.cat(parts)`` in a buffer with 64 bytes of slack after it (the native code
    reads the byte map 4 bytes at a time)."""
    n_rows, width = sum(len(p) for p in parts), parts[0].shape[1]
    flat = torch.zeros(n_rows * width + 64, dtype=parts[0].dtype, device=parts[0].device)
    out = flat[: n_rows * width].view(n_rows, width)
    torch.cat(parts, out=out)
    return out


class PermutationNull:
    """Collects the control rows of a batch; `finish` yields the null sums of the rank metrics."""

    def __init__(self, n_permutations: int, *, seed: int, ks: list[int | None]) -> None:
        self.n_permutations, self.seed, self.ks = n_permutations, seed, ks
        self.ref = _Rows()
        self.groups: dict[tuple[str, str, str], _Rows] = {}
        self.members: dict[tuple[str, str, str], list[str]] = {}
        self._kept: tuple[Tensor, Tensor] | None = None

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
            bucket = bucket_codes(scored.keys[group][first].float(), s.low[first], s.scale[first])
            kx = exact_slots(self.ks, top.shape[-1], bucket.shape[-1])
            bucket.scatter_(1, top[:, kx:], NEAR)
            bucket.scatter_(1, top[:, :kx], TOP)
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
        for first, count, (permT, pinvT) in self._tables(d_vocab):
            for key, rows in groups.items():
                for metric, values in self._block(ref, rows, permT, pinvT).items():
                    total = values[:, :count].double().sum(0)
                    sums[key][metric][first:first + count] = total.cpu().numpy()
        del permT, pinvT
        self.ref, self.groups = _Rows(), {}
        for (hidden, target, group), s in sums.items():
            for name in self.members[(hidden, target, group)]:
                yield hidden, target, name, dict(s), n_rows

    def _tables(self, d_vocab: int) -> Iterator[tuple[int, int, tuple[Tensor, Tensor]]]:
        """``(first, count, (permT, pinvT))`` for the blocks of permutations, drawn by
        `perm_tables` from one generator seeded with ``seed`` (the same permutations in every
        batch). When one block holds them all it is drawn once and kept for the next batches."""
        if self._kept is not None and self._kept[0].shape[0] == d_vocab:
            yield 0, self.n_permutations, self._kept
            return
        gen = torch.Generator().manual_seed(self.seed)
        size = block_size(self.n_permutations, d_vocab)
        workspace = torch.empty(2 * d_vocab * size, dtype=table_dtype(d_vocab))  # for every block
        for first in range(0, self.n_permutations, size):
            count = min(size, self.n_permutations - first)
            tables = perm_tables(gen, -(-count // 16) * 16, d_vocab, workspace)
            if count == self.n_permutations:
                self._kept = tables
            yield first, count, tables

    def _block(self, ref: dict[str, Tensor], rows: dict[str, Tensor], permT: Tensor,
               pinvT: Tensor) -> dict[str, Tensor]:
        """Per (row, permutation) metrics of one block of permutations, one rank group."""
        d_vocab, count = permT.shape
        k = rows["top"].shape[-1]
        kcut = sorted({kk for kk in self.ks if kk is not None and kk < d_vocab})
        out = null_terms(ref, rows, permT, pinvT, kcut, exact_slots(self.ks, k, d_vocab))
        metrics = {ndcg_name(kk): ndcg_ratio(out["dcg_k"][..., c], ref["prefix"][:, kk - 1, None])
                   for c, kk in enumerate(kcut)}
        full = [kk for kk in self.ks if kk is None or kk >= d_vocab]
        if full:
            mid, half = ndcg_interval(out["dcg_top"] + out["tail_lo"], out["dcg_top"] + out["tail_hi"],
                                      ref["idcg_lo"][:, None], ref["idcg_hi"][:, None])
            if exact_slots(self.ks, k, d_vocab) >= d_vocab:  # every rank is exact
                mid, half = ndcg_ratio(out["dcg_top"], ref["prefix"][:, -1, None]), half * 0
            metrics.update({ndcg_name(kk): mid for kk in full})
            metrics["ndcg_full_err"] = half
        metrics["top1"], metrics["top10"] = out["top1"], out["top10"]
        return metrics


def null_constants(d_vocab: int, k: int, kx: int) -> tuple[float, float, float, float]:
    """The discount brackets that do not depend on the row: ``near_lo, near_hi`` for p's heavy
    tokens in the top K below the exact slots (ranks Kx+1..K), ``light_lo, light_hi`` for the
    rest of the gain mass (ranks Kx+1..V)."""
    light_hi = 1 / np.log2(kx + 2)
    return 1 / np.log2(k + 1), light_hi, 1 / np.log2(d_vocab + 1), light_hi


def null_terms(ref: dict[str, Tensor], rows: dict[str, Tensor], permT: Tensor, pinvT: Tensor,
               kcut: list[int], kx: int) -> dict[str, Tensor]:
    """The raw per (row, permutation) sums: dcg_k [n, S, len(kcut)], dcg_top, tail_lo,
    tail_hi, top1, top10 [n, S]; by the native code (``native/permnull.cpp``) where it is
    available, else by `_null_torch`: the same numbers, bit for bit (tested)."""
    n_rows, d_vocab = ref["gains"].shape
    count, k = permT.shape[1], rows["top"].shape[-1]
    lib = native.library("permnull")
    args = dict(gains=ref["gains"], total=ref["total"], heavy=ref["heavy"], top=rows["top"],
                bucket=rows["bucket"], d_lo=rows["d_lo"], d_hi=rows["d_hi"])
    if lib is None or not native.usable(permT, pinvT, *args.values()):
        return _null_torch(permT, pinvT, kcut=kcut, kx=kx, **args)
    f32 = dict(dtype=torch.float32)
    out = {"dcg_k": torch.zeros(n_rows, max(1, len(kcut)), count, **f32),
           **{name: torch.empty(n_rows, count, **f32)
              for name in ("dcg_top", "tail_lo", "tail_hi", "top1", "top10")}}
    cuts = torch.tensor(kcut or [0], dtype=torch.int64)
    consts = torch.tensor(null_constants(d_vocab, k, kx), dtype=torch.float64)
    disc = discounts(k)
    i64, ptr = ctypes.c_int64, native.ptr
    native.run_rows(lambda r0, r1: lib.perm_null_rows(
        i64(r0), i64(r1), i64(d_vocab), i64(k), i64(kx), i64(count), i64(rows["d_lo"].shape[-1]),
        i64(permT.element_size()), ptr(permT), ptr(pinvT), *map(ptr, args.values()), ptr(disc),
        ptr(cuts), i64(len(kcut)), ptr(consts), *map(ptr, out.values())), n_rows)
    out["dcg_k"] = out["dcg_k"].transpose(1, 2)
    return out


def _null_torch(permT: Tensor, pinvT: Tensor, *, kcut: list[int], kx: int,
                **rows: Tensor) -> dict[str, Tensor]:
    """`null_terms` in torch (no native code, or tensors on a GPU), 16 permutations at a time."""
    parts = [_null_torch_block(permT[:, i:i + 16], pinvT[:, i:i + 16], kcut=kcut, kx=kx, **rows)
             for i in range(0, permT.shape[1], 16)]
    return {name: torch.cat([p[name] for p in parts], dim=1) for name in parts[0]}


def _running(x: Tensor) -> Tensor:
    """Float64 sums along dim 1, taken one term after the other (``cumsum``: the order of the
    native code's loops, so that both round alike)."""
    return x.double().cumsum(1)


def _null_torch_block(permT: Tensor, pinvT: Tensor, *, gains: Tensor, total: Tensor,
                      heavy: Tensor, top: Tensor, bucket: Tensor, d_lo: Tensor, d_hi: Tensor,
                      kcut: list[int], kx: int) -> dict[str, Tensor]:
    """Products in float32, sums in float64 in slot order, rounded to float32 at the end."""
    d_vocab, k = gains.shape[1], top.shape[-1]
    near_lo, near_hi, light_lo, light_hi = null_constants(d_vocab, k, kx)
    src = pinvT.to(top.device).long()[top[:, :kx]]  # [n, Kx, P]: the token in exact slot j
    g_slot = gains.gather(1, src.flatten(1)).view_as(src)
    dcg = _running(g_slot * discounts(kx, device=gains.device)[None, :, None])
    dst = permT.to(top.device).long()[heavy]  # [n, K, P]: where p's heavy token lands
    b = bucket.gather(1, dst.flatten(1)).view_as(dst).long()
    bb = b.clamp_max(d_lo.shape[-1] - 1)
    gh = gains.gather(1, heavy)[:, :, None] * (b != TOP)
    lo_b = torch.where(b == NEAR, near_lo, d_lo.gather(1, bb.flatten(1)).view_as(bb))
    hi_b = torch.where(b == NEAR, near_hi, d_hi.gather(1, bb.flatten(1)).view_as(bb))
    light = (total[:, None].double() - _running(g_slot)[:, -1] - _running(gh)[:, -1]).clamp_min(0)
    k10 = min(10, kx)
    hits = (src[:, :k10, None, :] == heavy[:, None, :k10, None]).any(2).float().sum(1)
    return {
        "dcg_k": dcg[:, [c - 1 for c in kcut] or [0], :].transpose(1, 2).float(),
        "dcg_top": dcg[:, -1].float(), "top1": (src[:, 0] == heavy[:, :1]).float(),
        "top10": hits / k10,
        "tail_lo": (_running(gh * lo_b)[:, -1] + light * light_lo).float(),
        "tail_hi": (_running(gh * hi_b)[:, -1] + light * light_hi).float(),
    }
