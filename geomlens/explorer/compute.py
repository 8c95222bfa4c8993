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

Cost: one forward pass (`run_model`, whose cache `Explorer` also gives the movers) and per row
the lenses' matmuls of [positions, d_model] x [d_model, d_vocab] (2 with tied embeddings),
rows stacked into large matmuls by `geomlens.analysis.lenses.lens_slices`.

Memory: scores are formed for at most `product_cells` (row, position) cells at a time (1,024,
or ``vocab_budget // d_vocab`` if fewer: a few rows of one block of positions), in two reused
matrices; no rows x positions x vocabulary tensor of the whole grid is ever held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.analysis.agreement import Reference, reference
from geomlens.analysis.lenses import (
    STACK_BUDGET,
    LayerInputs,
    LensContext,
    lens_slices,
    product_cells,
    score_buffers,
)
from geomlens.fused import Fused
from geomlens.geometry.trajectory import movement_stats
from geomlens.metrics.divergence import js_divergence_and_lse
from geomlens.metrics.ranking import ndcg_topk
from geomlens.metrics.selection import count_above, top_k

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import ActivationCache, HookedTransformer

TOP_K = 10
VOCAB_BUDGET = STACK_BUDGET
"""[cell, token] entries scored at once per lens (`geomlens.analysis.lenses.STACK_BUDGET`)."""
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


def _lens_vector(lens: str, layer: LayerInputs) -> Tensor:
    """The vector a distance lens compares with W_E (for its top-10 distances)."""
    if lens == "distance_ln_final":
        return layer.ln_final_normalized()
    if lens == "distance_ln_final_gain":
        return layer.ln_final_out()
    return layer.h


def _slice_cells(ctx: LensContext, scores: Tensor, ref: Reference, logp: Tensor, targets: Tensor,
                 x: Tensor | None, fused: Fused) -> dict[str, Tensor]:
    """The cells of one `lens_slices` slice (``x`` None: the logit lens, else the distance lens's vectors)."""
    top_values, ids = top_k(scores, TOP_K)
    ndcg = ndcg_topk(None, ref.ideal, ks=[TOP_K], score_top_indices=ids).values[TOP_K]
    if x is None:
        jsd, lse = fused(js_divergence_and_lse, ref.p, logp, scores, n_elements=scores.numel())
        values = (top_values - lse).exp()
    else:
        values = (x[:, None, :] - ctx.W_E[ids]).norm(dim=-1)
        jsd = torch.full_like(ndcg, float("nan"))
    ranks = count_above(scores, scores.gather(1, targets))
    return {"ids": ids, "values": values, "ranks": ranks, "ndcg": ndcg, "jsd": jsd}


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
def run_model(
    model: HookedTransformer, tokens: Int[Tensor, "pos"], names: set[str],
    fwd_hooks: Sequence[tuple[str, Callable]] = (),
    module_hooks: Sequence[tuple[torch.nn.Module, Callable]] = (),
) -> tuple[Float[Tensor, "pos d_vocab"], ActivationCache]:
    """One forward pass with ``fwd_hooks`` / ``module_hooks``, caching the hooks ``names``."""
    handles = [module.register_forward_hook(fn) for module, fn in module_hooks]
    try:
        with model.hooks(fwd_hooks=list(fwd_hooks)):
            logits, cache = model.run_with_cache(tokens.reshape(1, -1).to(model.cfg.device),
                                                 names_filter=lambda n: n in names)
    finally:
        for handle in handles:
            handle.remove()
    return logits[0].float(), cache


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
    logits, cache = run_model(model, tokens, capture_names(model.cfg.n_layers, sublayers),
                              fwd_hooks, module_hooks)
    return grid_from_run(model, tokens, logits, cache, lenses=lenses, sublayers=sublayers,
                         vocab_budget=vocab_budget, fused=fused)


@torch.no_grad()
def grid_from_run(
    model: HookedTransformer, tokens: Int[Tensor, "pos"], logits: Float[Tensor, "pos d_vocab"],
    cache: ActivationCache, *, lenses: Sequence[str], sublayers: bool,
    vocab_budget: int = VOCAB_BUDGET, fused: Fused | None = None,
) -> Grid:
    """The cells of one sequence from a `run_model` pass that cached `capture_names`."""
    tokens = tokens.reshape(-1).to(model.cfg.device)
    n_layers = model.cfg.n_layers
    final_top1 = logits.argmax(-1)
    nxt = torch.cat([tokens[1:], tokens[-1:]])
    targets = torch.stack([final_top1, nxt], -1)
    rows = row_hooks(n_layers, sublayers)
    cells = _score_rows(LensContext.of(model), [cache[hook][0] for _, hook in rows], logits,
                        targets, tuple(lenses), vocab_budget, fused or FUSED)
    step_norm, attn_share = _movement(cache, n_layers)
    layer_of = [layer for layer, _ in rows]
    grid = _assemble(tokens, rows, tuple(lenses), final_top1, cells)
    grid.step_norm = step_norm[layer_of].cpu().numpy()
    grid.attn_share = attn_share[layer_of].cpu().numpy()
    grid.resid = {-1: cache["blocks.0.hook_resid_pre"][0].float().cpu(),
                  **{i: cache[f"blocks.{i}.hook_resid_post"][0].float().cpu() for i in range(n_layers)}}
    grid.rank_next[:, -1, :] = -1
    return grid


def _score_rows(
    ctx: LensContext, hs: list[Float[Tensor, "pos d_model"]], logits: Float[Tensor, "pos d_vocab"],
    targets: Int[Tensor, "pos 2"], lenses: tuple[str, ...], vocab_budget: int, fused: Fused,
) -> dict[str, Tensor]:
    """Every row's cells (`_slice_cells` of each `lens_slices` slice), positions in blocks of
    up to `product_cells` (the reference once per block). Returns each output as
    [row, pos, lens, ...]."""
    n_pos = logits.shape[0]
    cells = product_cells(ctx.W_E.shape[0], vocab_budget)
    block = min(n_pos, cells)
    buffers = score_buffers(ctx, block, len(hs), cells)
    keys = ("ids", "values", "ranks", "ndcg", "jsd")
    out: dict[tuple[int, str], list[dict[str, Tensor]]] = {}
    for s in range(0, n_pos, block):
        e = min(n_pos, s + block)
        ref = reference(logits[s:e], topk=TOP_K, gain="exp2")
        logp = ref.logits - ref.lse
        resid = torch.stack([h[s:e] for h in hs])
        for r, lens, a, b, scores, rows in lens_slices(ctx, resid, lenses, cells=cells,
                                                        buffers=buffers):
            x = None if lens == "logit" else _lens_vector(lens, rows)
            out.setdefault((r, lens), []).append(_slice_cells(
                ctx, scores, ref.rows(a, b), logp[a:b], targets[s + a:s + b], x, fused))
    return {k: torch.stack([torch.stack([torch.cat([c[k] for c in out[r, lens]]) for lens in lenses], 1)
                            for r in range(len(hs))]) for k in keys}


def _assemble(tokens, rows, lenses, final_top1, cells: dict[str, Tensor]) -> Grid:
    def get(key: str) -> np.ndarray:
        return cells[key].cpu().numpy()

    ranks = get("ranks")
    return Grid(
        token_ids=tokens.cpu().numpy(), rows=rows, lenses=lenses,
        final_top1=final_top1.cpu().numpy(),
        top_ids=get("ids").astype(np.int64), top_values=get("values").astype(np.float32),
        rank_final=ranks[..., 0].astype(np.int64), rank_next=ranks[..., 1].astype(np.int64),
        ndcg=get("ndcg").astype(np.float32), jsd=get("jsd").astype(np.float32),
        step_norm=np.empty(0), attn_share=np.empty(0),
    )
