"""Per-layer lenses: where does the residual stream sit among the vocabulary?

Two lenses rank every vocabulary token for a residual vector ``h`` at some layer:

distance lens
    tokens ordered by squared Euclidean distance ``||h - e_t||^2`` to the rows of ``W_E``
    (rank 0 = closest). ``h`` is the raw residual stream by default; with ``normalize=True`` it
    is first normalised exactly as ``ln_final`` does before its gain, i.e. the value that
    ``ln_final.hook_normalized`` would record for ``h`` (RMSNorm: ``h / rms(h)``; LayerNorm:
    centred then scaled). The gain ``ln_final.w`` is *not* applied, so the last layer with
    ``normalize=True`` uses exactly the vector the model hands to its (weight-folded) head.
logit lens
    tokens ordered by logit of ``unembed(ln_final(h))`` (nostalgebraist's logit lens; rank 0 =
    highest logit). At the last layer it reproduces the model's own logits.

Ranks are "how many *other* tokens are strictly better": ties share the best rank.
Distances come from the shared kernel `geomlens.geometry.distances` in vocabulary chunks of
``chunk_size`` rows and never materialise a ``[n_positions, d_vocab, d_model]`` tensor; the
ranks use ``||e||^2 - 2 h.e`` (the squared distance less ``||h||^2``, which orders each row
alike); all arithmetic is float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.backend import view_of
from geomlens.geometry import distances
from geomlens.metrics.selection import count_above

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


def ln_final_normalized(
    model: HookedTransformer, resid: Float[Tensor, "batch pos d_model"]
) -> Float[Tensor, "batch pos d_model"]:
    """What ``ln_final.hook_normalized`` would record if ``resid`` entered ``ln_final``.

    Runs the model's own ``ln_final`` with a temporary hook, so it is right for every norm
    type TransformerLens has (LN, LNPre, RMS, RMSPre) without re-implementing any of them. The
    hook is a plain torch forward hook on the hook point, removed by its own handle (the
    model's hook context would reset every hook point of the model: ~7 ms a call).
    """
    grabbed: dict[str, Tensor] = {}

    def grab(module, inputs, output: Tensor) -> None:
        grabbed["x"] = output

    handle = model.ln_final.hook_normalized.register_forward_hook(grab)
    try:
        model.ln_final(resid)
    finally:
        handle.remove()
    return grabbed["x"]


def apply_ln_final(
    model: HookedTransformer, resid: Float[Tensor, "batch pos d_model"]
) -> Float[Tensor, "batch pos d_model"]:
    """``ln_final(resid)`` including its gain/bias (the input of ``unembed``)."""
    return view_of(model).ln_final(resid)


def sq_distance_chunks(
    h: Float[Tensor, "n_positions d_model"],
    W_E: Float[Tensor, "d_vocab d_model"],
    *,
    chunk_size: int = 8192,
) -> Iterator[tuple[int, Float[Tensor, "n_positions chunk"]]]:
    """Yield ``(start, ||h - W_E[start:start+chunk]||^2)`` chunk by chunk (float32, >= 0)."""
    return distances.sq_distance_chunks(h.float(), W_E, vocab_chunk=chunk_size)


def _ranks_from_chunks(
    chunks: Iterator[tuple[int, Float[Tensor, "n_positions chunk"]]],
    targets: Int[Tensor, "n_positions k"],
    target_scores: Float[Tensor, "n_positions k"],
    *,
    lower_is_better: bool,
) -> tuple[Int[Tensor, "n_positions k"], Float[Tensor, "n_positions"], Int[Tensor, "n_positions"]]:
    """Count, per target, the *other* tokens that score strictly better; track the best token.

    The target's own chunk entry is excluded explicitly, so round-off between the chunked
    matmul and ``target_scores`` can never count a token as better than itself.
    """
    n_positions, k = targets.shape
    ranks = torch.zeros(n_positions, k, dtype=torch.long, device=targets.device)
    worst = float("inf") if lower_is_better else -float("inf")
    best = torch.full((n_positions,), worst, device=targets.device)
    best_idx = torch.zeros(n_positions, dtype=torch.long, device=targets.device)
    for start, s in chunks:
        width = s.shape[1]
        inside = (targets >= start) & (targets < start + width)
        own = s.gather(1, (targets - start).clamp(0, width - 1))
        ranks += count_above(s.contiguous(), target_scores, below=lower_is_better)
        own_better = own < target_scores if lower_is_better else own > target_scores
        ranks -= (inside & own_better).long()
        val, arg = s.min(-1) if lower_is_better else s.max(-1)
        upd = val < best if lower_is_better else val > best
        best = torch.where(upd, val, best)
        best_idx = torch.where(upd, arg + start, best_idx)
    return ranks, best, best_idx


def distance_ranks(
    h: Float[Tensor, "n_positions d_model"],
    W_E: Float[Tensor, "d_vocab d_model"],
    targets: Int[Tensor, "n_positions k"],
    *,
    chunk_size: int = 8192,
) -> tuple[Int[Tensor, "n_positions k"], Float[Tensor, "n_positions"], Int[Tensor, "n_positions"]]:
    """Rank of each target token by distance of its embedding to ``h`` (0 = closest).

    Returns:
        ranks: number of other tokens strictly closer to ``h`` than each target.
        nearest_dist: Euclidean (not squared) distance from ``h`` to its nearest ``W_E`` row.
        nearest_token: index of that row.
    """
    hf = h.float()
    e_t = W_E.to(hf.device, torch.float32)[targets]  # [n_positions k d_model]
    target_scores = e_t.pow(2).sum(-1) - 2.0 * einops.einsum(
        hf, e_t, "n_positions d_model, n_positions k d_model -> n_positions k"
    )
    ranks, best, best_idx = _ranks_from_chunks(
        distances.sq_distance_chunks(hf, W_E, vocab_chunk=chunk_size, relative=True),
        targets, target_scores, lower_is_better=True,
    )
    nearest_dist = (best + hf.pow(2).sum(-1)).clamp_min(0.0).sqrt()
    return ranks, nearest_dist, best_idx


def logit_chunks(
    model: HookedTransformer,
    x: Float[Tensor, "n_positions d_model"],
    *,
    chunk_size: int = 8192,
) -> Iterator[tuple[int, Float[Tensor, "n_positions chunk"]]]:
    """Yield ``(start, x @ W_U[:, chunk] + b_U[chunk])`` for an already-normalised ``x``."""
    x = x.float()
    W_U, b_U = view_of(model).W_U, view_of(model).b_U
    for start in range(0, W_U.shape[1], chunk_size):
        w = W_U[:, start : start + chunk_size].to(x.device, torch.float32)
        b = b_U[start : start + chunk_size].to(x.device, torch.float32)
        yield start, torch.addmm(b[None, :], x, w)


def logit_ranks(
    model: HookedTransformer,
    resid: Float[Tensor, "n_positions d_model"],
    targets: Int[Tensor, "n_positions k"],
    *,
    chunk_size: int = 8192,
) -> tuple[Int[Tensor, "n_positions k"], Int[Tensor, "n_positions"]]:
    """Logit-lens rank of each target (0 = highest logit of ``unembed(ln_final(resid))``).

    Returns ``(ranks, top1)`` where ``top1`` is the arg-max token of the lens.
    """
    x = apply_ln_final(model, resid[None]).squeeze(0).float()
    W_U = view_of(model).W_U.to(x.device, torch.float32)
    b_U = view_of(model).b_U.to(x.device, torch.float32)
    w_t = W_U.T[targets]  # [n_positions k d_model]
    target_logits = einops.einsum(x, w_t, "n_positions d_model, n_positions k d_model -> n_positions k")
    target_logits = target_logits + b_U[targets]
    ranks, _, top1 = _ranks_from_chunks(
        logit_chunks(model, x, chunk_size=chunk_size), targets, target_logits, lower_is_better=False
    )
    return ranks, top1


def lens_ranks(
    model: HookedTransformer,
    resid: Float[Tensor, "n_positions d_model"],
    targets: Int[Tensor, "n_positions k"],
    *,
    normalize: bool = False,
    chunk_size: int = 8192,
) -> dict[str, Tensor]:
    """Distance lens and logit lens of one layer's residual vectors, side by side.

    Returns a dict with ``dlens_rank`` [n_positions k], ``nearest_dist`` [n_positions],
    ``nearest_token`` [n_positions] (both from the same ``h`` as the distance lens) and
    ``logit_rank`` [n_positions k].
    """
    h = ln_final_normalized(model, resid[None]).squeeze(0) if normalize else resid
    d_rank, near_d, near_t = distance_ranks(h, view_of(model).W_E, targets, chunk_size=chunk_size)
    l_rank, _ = logit_ranks(model, resid, targets, chunk_size=chunk_size)
    return {
        "dlens_rank": d_rank,
        "nearest_dist": near_d,
        "nearest_token": near_t,
        "logit_rank": l_rank,
    }
