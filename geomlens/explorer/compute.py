"""What the explorer shows, computed once per sequence: every row (block output, optionally the
sub-layer points) x position x lens, reduced to a top-10 and a few numbers per cell.

Definitions (``h`` = the residual vector of the cell's row at its position; p = the model's
final next-token distribution at that position; lens names and scores = the layer lens's
registry `geomlens.analysis.layers.LENSES`, higher = ranked first):

    top_ids / top_values  the lens's 10 best tokens; value = probability softmax(lens logits)
                          for ``logit``, the Euclidean distance ‖x − W_E[v]‖ for a distance
                          lens (x = h, n(h) or ln_final(h), the vector that lens compares)
    rank_final            tokens ranked strictly above the model's final top-1 token (0 = first)
    rank_next             same for the actual next token (-1 at the last position: none)
    ndcg@10               the analysis's NDCG@10 of the lens ranking against p (gains = gain(p),
                          `geomlens.analysis.agreement`)
    jsd                   JSD(p ‖ softmax(lens logits)) in nats for the ``logit`` lens
                          (`geomlens.metrics.js_divergence_fast`); NaN for the distance lenses, which
                          define a ranking, not a distribution (their calibrated JSD is
                          `geomlens analyze`'s)
    step_norm, attn_share ‖Δh^l‖ and ⟨attn_out, Δh⟩/‖Δh‖² of the row's block
                          (`geomlens.geometry.trajectory.movement_stats`)

Memory: scores are formed for one row and at most ``vocab_budget // d_vocab`` positions at a
time; no rows x positions x vocabulary tensor is ever held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.analysis.agreement import Reference, reference, summary_metrics
from geomlens.analysis.layers import LENSES, LayerInputs, LensContext
from geomlens.fused import Fused
from geomlens.geometry.lens import apply_ln_final, ln_final_normalized
from geomlens.geometry.trajectory import movement_stats
from geomlens.metrics.divergence import js_divergence_and_lse
from geomlens.metrics.selection import count_above, rank_summary

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

TOP_K = 10
VOCAB_BUDGET = 1 << 23
"""[position, token] entries scored at once per lens (32 MiB per float32 matrix)."""
SUBLAYER_HOOKS = ("hook_resid_mid", "hook_attn_out", "hook_mlp_out")
ROW_HOOK = "hook_resid_post"
MEASURES = ("rank_final", "rank_next", "ndcg@10", "jsd", "step_norm", "attn_share")
"""The per-cell numbers the grid can be coloured by."""
FUSED = Fused("auto", min_elements=1 << 20, dynamic_rows=True)
"""The logit lens's JSD pass, compiled from a million entries up (eager where no compiler)."""


@dataclass
class Grid:
    """One sequence's cells. Arrays are indexed [row, pos, lens, ...]."""

    token_ids: np.ndarray  # [pos] input tokens
    rows: list[tuple[int, str]]  # (layer, full hook name), bottom row first
    lenses: tuple[str, ...]
    final_top1: np.ndarray  # [pos]
    top_ids: np.ndarray  # [row, pos, lens, k] int64
    top_values: np.ndarray  # [row, pos, lens, k] float32
    rank_final: np.ndarray  # [row, pos, lens] int64
    rank_next: np.ndarray  # [row, pos, lens] int64, -1 = no next token
    ndcg: np.ndarray  # [row, pos, lens] float32
    jsd: np.ndarray  # [row, pos, lens] float32
    step_norm: np.ndarray  # [row, pos] float32
    attn_share: np.ndarray  # [row, pos] float32
    resid: dict[int, Tensor] = field(default_factory=dict, repr=False)
    """layer -> h at every position (-1 = embedding), for the trajectory panel."""


def row_hooks(n_layers: int, sublayers: bool) -> list[tuple[int, str]]:
    """(layer, full hook name) of every grid row, bottom first."""
    kinds = (*SUBLAYER_HOOKS, ROW_HOOK) if sublayers else (ROW_HOOK,)
    return [(layer, f"blocks.{layer}.{k}") for layer in range(n_layers) for k in kinds]


def _lens_vector(ctx: LensContext, lens: str, h: Tensor) -> Tensor:
    """The vector a distance lens compares with W_E (for its top-10 distances)."""
    if lens == "distance_ln_final":
        return ln_final_normalized(ctx.model, h[None])[0].float()
    if lens == "distance_ln_final_gain":
        return apply_ln_final(ctx.model, h[None])[0].float()
    return h


@torch.no_grad()
def score_cells(
    ctx: LensContext, h: Float[Tensor, "n d_model"], ref: Reference,
    targets: Int[Tensor, "n 2"], lenses: Sequence[str], fused: Fused,
) -> dict[str, Tensor]:
    """Every lens's top-10, target ranks, NDCG@10 and JSD for ``n`` positions of one row
    (``ref``: `reference` of the final logits at those positions)."""
    layer = LayerInputs(ctx, h.float())
    logp = ref.logits - ref.lse
    out: dict[str, list[Tensor]] = {k: [] for k in ("ids", "values", "ranks", "ndcg", "jsd")}
    for lens in lenses:
        scores = LENSES.get(lens)(layer)
        summary = rank_summary(scores, ref.ideal.gains, k=TOP_K)
        ndcg = summary_metrics(summary, ref, ks=[TOP_K])[f"ndcg@{TOP_K}"]
        ids = summary.top_indices
        if lens == "logit":
            jsd, lse = fused(js_divergence_and_lse, ref.p, logp, scores,
                             n_elements=scores.numel())
            values = (summary.top_values - lse).exp()
        else:
            x = _lens_vector(ctx, lens, layer.h)
            values = (x[:, None, :] - ctx.W_E[ids]).norm(dim=-1)
            jsd = torch.full_like(ndcg, float("nan"))
        ranks = count_above(scores, scores.gather(1, targets))
        for key, v in zip(out, (ids, values, ranks, ndcg, jsd)):
            out[key].append(v)
    return {k: torch.stack(v, 1) for k, v in out.items()}


def capture_names(n_layers: int, sublayers: bool) -> set[str]:
    names = {"blocks.0.hook_resid_pre"}
    for layer in range(n_layers):
        names |= {f"blocks.{layer}.{h}" for h in ("hook_resid_pre", "hook_resid_post",
                                                   "hook_attn_out", "hook_mlp_out")}
        if sublayers:
            names.add(f"blocks.{layer}.hook_resid_mid")
    return names


def _movement(cache, n_layers: int) -> tuple[Tensor, Tensor]:
    """step_norm, attn_share [layer, pos] from `movement_stats`."""
    norms, shares, prev = [], [], None
    for layer in range(n_layers):
        block = {h: cache[f"blocks.{layer}.{h}"][0].float() for h in
                 ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")}
        stats, prev = movement_stats(block, prev)
        norms.append(stats["step_norm"])
        shares.append(stats["attn_share"])
    return torch.stack(norms), torch.stack(shares)


@torch.no_grad()
def compute_grid(
    model: HookedTransformer,
    tokens: Int[Tensor, "pos"],
    *,
    lenses: Sequence[str] = ("logit", "distance_raw", "distance_ln_final", "distance_ln_final_gain"),
    sublayers: bool = False,
    fwd_hooks: Sequence[tuple[str, Callable]] = (),
    module_hooks: Sequence[tuple[torch.nn.Module, Callable]] = (),
    vocab_budget: int = VOCAB_BUDGET,
    fused: Fused | None = None,
) -> Grid:
    """The cells of one sequence (module doc), from one forward pass with ``fwd_hooks``
    (an intervention changes p too, so every row is rescored against the new p)."""
    tokens = tokens.reshape(-1).to(model.cfg.device)
    n_layers, n_pos = model.cfg.n_layers, tokens.shape[0]
    names = capture_names(n_layers, sublayers)
    handles = [module.register_forward_hook(fn) for module, fn in module_hooks]
    try:
        with model.hooks(fwd_hooks=list(fwd_hooks)):
            logits, cache = model.run_with_cache(tokens[None], names_filter=lambda n: n in names)
    finally:
        for handle in handles:
            handle.remove()
    final_logits = logits[0].float()
    final_top1 = final_logits.argmax(-1)
    nxt = torch.cat([tokens[1:], tokens[-1:]])
    targets = torch.stack([final_top1, nxt], -1)
    rows = row_hooks(n_layers, sublayers)
    ctx = LensContext.of(model)
    chunk = max(1, vocab_budget // model.cfg.d_vocab)
    parts: list[list[dict[str, Tensor]]] = [[] for _ in rows]
    for s in range(0, n_pos, chunk):  # the reference once per chunk, for every row
        ref = reference(final_logits[s:s + chunk], topk=TOP_K, gain="exp2")
        for r, (_, hook) in enumerate(rows):
            parts[r].append(score_cells(ctx, cache[hook][0, s:s + chunk], ref,
                                        targets[s:s + chunk], lenses, fused or FUSED))
    per_row = [{k: torch.cat([p[k] for p in row]) for k in row[0]} for row in parts]
    step_norm, attn_share = _movement(cache, n_layers)
    layer_of = [layer for layer, _ in rows]
    grid = _assemble(tokens, rows, tuple(lenses), final_top1, per_row)
    grid.step_norm = step_norm[layer_of].cpu().numpy()
    grid.attn_share = attn_share[layer_of].cpu().numpy()
    grid.resid = {-1: cache["blocks.0.hook_resid_pre"][0].float().cpu(),
                  **{i: cache[f"blocks.{i}.hook_resid_post"][0].float().cpu() for i in range(n_layers)}}
    grid.rank_next[:, -1, :] = -1
    return grid


def _assemble(tokens, rows, lenses, final_top1, per_row) -> Grid:
    def stack(key: str) -> np.ndarray:
        return np.stack([p[key].cpu().numpy() for p in per_row])

    ranks = stack("ranks")
    return Grid(
        token_ids=tokens.cpu().numpy(), rows=rows, lenses=lenses,
        final_top1=final_top1.cpu().numpy(),
        top_ids=stack("ids").astype(np.int64), top_values=stack("values").astype(np.float32),
        rank_final=ranks[..., 0].astype(np.int64), rank_next=ranks[..., 1].astype(np.int64),
        ndcg=stack("ndcg").astype(np.float32), jsd=stack("jsd").astype(np.float32),
        step_norm=np.empty(0), attn_share=np.empty(0),
    )
