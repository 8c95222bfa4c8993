"""Euclidean distances from hidden states to every row of a vocabulary matrix (W_E or W_U.T).

Uses the identity ``‖h − e‖² = ‖h‖² − 2 h·e + ‖e‖²`` with one matmul per vocabulary chunk,
clamped at 0 before any square root (round-off can make it slightly negative), so that a
``[n, d_vocab, d_model]`` difference tensor is never formed. The matmul ``h·e`` is returned
as well: every score in `geomlens.geometry.scores` derives from these two matrices.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def row_sq_norms(matrix: Float[Tensor, "d_vocab d_model"]) -> Float[Tensor, "d_vocab"]:
    """‖e_v‖² of each row (precompute once per target matrix)."""
    return matrix.pow(2).sum(-1)


def dot_and_sq_dist(
    h: Float[Tensor, "n d_model"],
    targets: Float[Tensor, "d_vocab d_model"],
    *,
    targets_sq: Float[Tensor, "d_vocab"] | None = None,
    vocab_chunk: int | None = None,
) -> tuple[Float[Tensor, "n d_vocab"], Float[Tensor, "n d_vocab"]]:
    """Dot products ``h·e_v`` and squared distances ``‖h − e_v‖²`` (clamped at 0).

    Args:
        h: hidden states, one per row.
        targets: the vocabulary matrix, one token vector per row (W_E, or W_U transposed).
        targets_sq: precomputed `row_sq_norms(targets)`; computed here if None.
        vocab_chunk: compute this many vocabulary rows per matmul (None = all at once).
            Results are identical; chunking only bounds the temporary memory.
    """
    if targets_sq is None:
        targets_sq = row_sq_norms(targets)
    n, vocab = h.shape[0], targets.shape[0]
    h_sq = h.pow(2).sum(-1, keepdim=True)
    dot = torch.empty(n, vocab, dtype=h.dtype, device=h.device)
    sq = torch.empty_like(dot)
    step = vocab if vocab_chunk is None else max(1, vocab_chunk)
    for start in range(0, vocab, step):
        stop = min(vocab, start + step)
        torch.matmul(h, targets[start:stop].T, out=dot[:, start:stop])
        # sq = ‖h‖² − 2 h·e + ‖e‖², then clamp round-off negatives at 0
        torch.add(h_sq, targets_sq[start:stop], out=sq[:, start:stop])
        sq[:, start:stop].add_(dot[:, start:stop], alpha=-2.0).clamp_(min=0.0)
    return dot, sq


def sq_distances(
    h: Float[Tensor, "n d_model"],
    targets: Float[Tensor, "d_vocab d_model"],
    *,
    vocab_chunk: int | None = None,
) -> Float[Tensor, "n d_vocab"]:
    """Squared Euclidean distances ``‖h − e_v‖²`` (see `dot_and_sq_dist`)."""
    return dot_and_sq_dist(h, targets, vocab_chunk=vocab_chunk)[1]


def distances(
    h: Float[Tensor, "n d_model"],
    targets: Float[Tensor, "d_vocab d_model"],
    *,
    vocab_chunk: int | None = None,
) -> Float[Tensor, "n d_vocab"]:
    """Euclidean distances ``‖h − e_v‖`` (square root of the clamped squared distance)."""
    return sq_distances(h, targets, vocab_chunk=vocab_chunk).sqrt_()
