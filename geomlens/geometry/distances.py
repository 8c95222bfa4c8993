"""Squared Euclidean distances from hidden states to every row of a vocabulary matrix (W_E or
W_U.T): the one kernel that the analysis scores, the distance lens, the ablation metrics and
the KNN heads share.

    ‖h − e_v‖² = ‖h‖² + ‖e_v‖² − 2 h·e_v            (the matmul identity)

`sq_distance_block` evaluates it for one block of vocabulary rows: one broadcast add
``‖h‖² + ‖e‖²`` and one matmul accumulated into it, then a clamp at 0 (round-off can make the
identity slightly negative; clamp before any square root). `sq_distance_chunks` walks the
vocabulary ``vocab_chunk`` rows at a time, so a ``[n_positions, d_vocab, d_model]`` difference
tensor is never formed; `dot_and_sq_dist`, `sq_distances` and `distances` fill whole
``[n_positions, d_vocab]`` matrices with it. Who uses what:

    analysis scores   `sq_distance_from_dot`: every score in `geomlens.geometry.scores` derives
                      from h·e and ‖h − e‖², so only the matmul (or the LM logits, when the
                      target is the tied unembedding) is kept; `dot_and_sq_dist` fills both
    distance lens     `sq_distance_chunks(..., relative=True)`: ‖e‖² − 2 h·e, the squared
                      distance less ‖h‖², which orders each row's vocabulary exactly like it
    ablation metrics  `sq_distances`
    KNN heads         `sq_distance_block(..., floor=None)` inside one custom autograd function
                      with a hand-written backward (`geomlens.heads.distance`), which clamps in
                      its fused epilogue

These functions do not record gradients (they write into preallocated outputs under
``no_grad``); `geomlens.heads.distance` is the differentiable wrapper. Arithmetic is in the
dtype of ``h`` (float32 in geomlens, float64 in the gradient checks): target rows are moved to
h's device and dtype one chunk at a time, so W_E may stay in bf16 or on another device.
"""

from __future__ import annotations

from typing import Iterator

import torch
from jaxtyping import Float
from torch import Tensor


def row_sq_norms(matrix: Float[Tensor, "d_vocab d_model"]) -> Float[Tensor, "d_vocab"]:
    """‖e_v‖² of each row (precompute once per target matrix)."""
    return matrix.pow(2).sum(-1)


@torch.no_grad()
def sq_distance_block(
    h: Float[Tensor, "n_positions d_model"],
    h_sq: Float[Tensor, "n_positions 1"],
    targets: Float[Tensor, "d_vocab d_model"],
    targets_sq: Float[Tensor, "d_vocab"],
    *,
    floor: float | None = 0.0,
    out: Float[Tensor, "n_positions d_vocab"] | None = None,
    dot_out: Float[Tensor, "n_positions d_vocab"] | None = None,
) -> Float[Tensor, "n_positions d_vocab"]:
    """``max(‖h‖² + ‖e‖² − 2 h·e, floor)`` for every pair of rows: the distance kernel.

    Args:
        h: hidden states, one per row.
        h_sq: ``‖h‖²`` per row (zeros give ``‖e‖² − 2 h·e``).
        targets: vocabulary rows (a chunk of W_E, or of W_U transposed), same dtype as ``h``.
        targets_sq: ``‖e‖²`` per row, plus any constant the caller wants added to the result.
        floor: clamp the result at this value (None: no clamp).
        out: write the result here (e.g. a block of columns of a larger matrix).
        dot_out: also keep ``h·e``: the matmul goes here and is subtracted from the result.
    """
    if dot_out is not None:
        torch.matmul(h, targets.T, out=dot_out)
        return sq_distance_from_dot(dot_out, h_sq, targets_sq, floor=floor, out=out)
    out = torch.add(h_sq, targets_sq, out=out)
    out.addmm_(h, targets.T, alpha=-2.0)
    return out if floor is None else out.clamp_(min=floor)


def sq_distance_from_dot(
    dot: Float[Tensor, "n_positions d_vocab"],
    h_sq: Float[Tensor, "n_positions 1"],
    targets_sq: Float[Tensor, "d_vocab"],
    *,
    floor: float | None = 0.0,
    out: Float[Tensor, "n_positions d_vocab"] | None = None,
) -> Float[Tensor, "n_positions d_vocab"]:
    """``max((‖h‖² + ‖e‖²) − 2 h·e, floor)`` from dot products already computed (e.g. the LM
    logits when the target is the tied unembedding). Element-wise, so `torch.compile` fuses it
    into whatever reads the distances; rounds exactly like `sq_distance_block`."""
    if out is None:
        sq = (h_sq + targets_sq) - 2.0 * dot
        return sq if floor is None else sq.clamp_min(floor)
    torch.add(h_sq, targets_sq, out=out).add_(dot, alpha=-2.0)
    return out if floor is None else out.clamp_(min=floor)


def sq_distance_chunks(
    h: Float[Tensor, "n_positions d_model"],
    targets: Float[Tensor, "d_vocab d_model"],
    *,
    targets_sq: Float[Tensor, "d_vocab"] | None = None,
    vocab_chunk: int | None = None,
    shift: float = 0.0,
    relative: bool = False,
    out: Float[Tensor, "n_positions d_vocab"] | None = None,
    dot_out: Float[Tensor, "n_positions d_vocab"] | None = None,
) -> Iterator[tuple[int, Float[Tensor, "n_positions chunk"]]]:
    """Yield ``(start, block)`` for the vocabulary rows ``start:start + chunk`` in order.

    ``block = max(‖h − e‖², 0) + shift``. With ``relative=True`` it is ``‖e‖² − 2 h·e + shift``
    instead, not clamped: the squared distance less ``‖h‖²`` (the lens ranks with it).

    Args:
        targets_sq: precomputed `row_sq_norms(targets)`; computed chunk by chunk if None.
        vocab_chunk: vocabulary rows per matmul (None = all at once). The values do not
            depend on it; it only bounds the temporary memory.
        out, dot_out: full ``[n_positions, d_vocab]`` matrices to write the blocks (and the
            dot products) into; without ``out`` each block is a new tensor.
    """
    h_sq = h.new_zeros(h.shape[0], 1) if relative else h.pow(2).sum(-1, keepdim=True)
    d_vocab = targets.shape[0]
    step = d_vocab if vocab_chunk is None else max(1, vocab_chunk)
    for start in range(0, d_vocab, step):
        cols = slice(start, min(d_vocab, start + step))
        rows = targets[cols].to(h.device, h.dtype)
        rows_sq = row_sq_norms(rows) if targets_sq is None else targets_sq[cols]
        if shift:
            rows_sq = rows_sq + shift
        block = sq_distance_block(
            h, h_sq, rows, rows_sq, floor=None if relative else shift,
            out=None if out is None else out[:, cols],
            dot_out=None if dot_out is None else dot_out[:, cols],
        )
        yield start, block


def _run(chunks: Iterator[tuple[int, Tensor]]) -> None:
    """Compute every block of a `sq_distance_chunks` that writes into its ``out``."""
    for _ in chunks:
        pass


def sq_distances(
    h: Float[Tensor, "n_positions d_model"],
    targets: Float[Tensor, "d_vocab d_model"],
    *,
    vocab_chunk: int | None = None,
    shift: float = 0.0,
) -> Float[Tensor, "n_positions d_vocab"]:
    """Squared Euclidean distances ``max(‖h − e_v‖², 0) + shift`` (see `sq_distance_chunks`)."""
    sq = h.new_empty(h.shape[0], targets.shape[0])
    _run(sq_distance_chunks(h, targets, vocab_chunk=vocab_chunk, shift=shift, out=sq))
    return sq


def dot_and_sq_dist(
    h: Float[Tensor, "n_positions d_model"],
    targets: Float[Tensor, "d_vocab d_model"],
    *,
    targets_sq: Float[Tensor, "d_vocab"] | None = None,
    vocab_chunk: int | None = None,
) -> tuple[Float[Tensor, "n_positions d_vocab"], Float[Tensor, "n_positions d_vocab"]]:
    """Dot products ``h·e_v`` and squared distances ``‖h − e_v‖²`` (clamped at 0), from one
    matmul per vocabulary chunk.

    Args:
        h: hidden states, one per row.
        targets: the vocabulary matrix, one token vector per row (W_E, or W_U transposed).
        targets_sq: precomputed `row_sq_norms(targets)`; computed here if None.
        vocab_chunk: compute this many vocabulary rows per matmul (None = all at once).
            Results are identical; chunking only bounds the temporary memory.
    """
    dot = h.new_empty(h.shape[0], targets.shape[0])
    sq = torch.empty_like(dot)
    _run(sq_distance_chunks(h, targets, targets_sq=targets_sq, vocab_chunk=vocab_chunk,
                            out=sq, dot_out=dot))
    return dot, sq


def distances(
    h: Float[Tensor, "n_positions d_model"],
    targets: Float[Tensor, "d_vocab d_model"],
    *,
    vocab_chunk: int | None = None,
) -> Float[Tensor, "n_positions d_vocab"]:
    """Euclidean distances ``‖h − e_v‖`` (square root of the clamped squared distance)."""
    return sq_distances(h, targets, vocab_chunk=vocab_chunk).sqrt_()
