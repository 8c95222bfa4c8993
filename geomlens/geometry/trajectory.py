"""The residual stream as a trajectory through embedding space.

For a token at position ``pos`` the residual stream visits ``h^0 = embedding`` (the input of
block 0, ``blocks.0.hook_resid_pre``) and then ``h^l = blocks.{l-1}.hook_resid_post`` for
l = 1..n_layers. Block ``l`` (0-based, the ``layer`` column below) moves it by the step

    dh^l = blocks.{l}.hook_resid_post - blocks.{l}.hook_resid_pre
         = blocks.{l}.hook_attn_out + blocks.{l}.hook_mlp_out      (sequential blocks)

Per (sequence, position, layer) `trajectory_stats` records, beside ``token`` (the input token as
text) and ``token_id``,

    step_norm            ||dh^l||
    attn_norm, mlp_norm  ||attn_out||, ||mlp_out||
    attn_share           projection share <attn_out, dh>/||dh||^2 (likewise mlp_share); the two
                         shares sum to 1, either can be negative (a component that moves
                         against the step) or > 1.
    attn_cos, mlp_cos    cosine of each component with dh (0 when a vector is exactly 0)
    inertia_cos          cosine(dh^l, dh^(l-1)): does the stream keep its direction?
                         NaN for layer 0, which has no previous step.
    nearest_dist         distance from h^(l+1) (= resid_post of block l) to its nearest W_E row;
                         same h as the distance lens (see ``normalize_lens``)
    nearest_token(_id)   that row's token as text, and its id
    dlens_rank_top1/next distance-lens rank (0 = closest embedding, see `geomlens.geometry.lens`)
                         of the model's final top-1 prediction / of the actual next token
    logit_rank_top1/next logit-lens rank (0 = highest logit of unembed(ln_final(resid_post)))
                         of the same two tokens; the *_next columns are NaN at the last valid
                         position of each sequence (there is no next token).

Activations are taken one batch at a time with ``run_with_cache(names_filter=...)`` and reduced
to these scalars before the next batch; no corpus of activations is ever kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from geomlens.data.batching import ValidPositions
from geomlens.data.inputs import TextInput, as_batch, as_sequences
from geomlens.data.token_map import token_map
from geomlens.errors import InputError
from geomlens.geometry.lens import lens_ranks, logit_ranks

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

#: columns of `trajectory_stats` that identify a row rather than measure something
TRAJECTORY_KEYS: tuple[str, ...] = ("batch_idx", "pos", "layer", "token", "token_id", "nearest_token",
                                    "nearest_token_id")
STAT_COLUMNS: tuple[str, ...] = (
    "step_norm", "attn_norm", "mlp_norm", "attn_share", "mlp_share", "attn_cos", "mlp_cos",
    "inertia_cos", "nearest_dist", "dlens_rank_top1", "dlens_rank_next", "logit_rank_top1",
    "logit_rank_next",
)
#: column order of `trajectory_stats`
COLUMNS: tuple[str, ...] = (
    "batch_idx", "pos", "layer", "token", "token_id", *STAT_COLUMNS[:9], "nearest_token",
    "nearest_token_id", *STAT_COLUMNS[9:]
)


BLOCK_HOOKS: tuple[str, ...] = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
"""The per-block hook points `trajectory_stats` reads."""


STACK_ROWS = 2048
"""Residual vectors (layers x positions) whose lens ranks are computed together: each matmul
then has up to this many rows (a CPU GEMM with 160 rows runs at ~70% of its rate with 1,024+).
Every row is ranked on its own, so the grouping changes speed only."""

def hook_names(n_layers: int) -> list[str]:
    """Full hook names `trajectory_stats` reads, per block: resid_pre, resid_post, attn_out,
    mlp_out. (``resid_mid`` = resid_pre + attn_out and ``ln_final.hook_normalized`` are not
    needed: the tests check those identities, and the lens re-applies ``ln_final``.)"""
    return [f"blocks.{layer}.{h}" for layer in range(n_layers) for h in BLOCK_HOOKS]


def _share_and_cos(
    comp: Float[Tensor, "n_positions d_model"], step: Float[Tensor, "n_positions d_model"]
) -> tuple[Float[Tensor, "n_positions"], Float[Tensor, "n_positions"]]:
    dot = (comp * step).sum(-1)
    share = dot / step.pow(2).sum(-1)
    return share, F.cosine_similarity(comp, step, dim=-1)


def movement_stats(
    block: dict[str, Float[Tensor, "n_positions d_model"]],
    prev_step: Float[Tensor, "n_positions d_model"] | None,
) -> tuple[dict[str, Tensor], Float[Tensor, "n_positions d_model"]]:
    """The step of one block and how attention and MLP make it (the ``*_norm``, ``*_share``,
    ``*_cos`` and ``inertia_cos`` columns). ``block`` maps each of `BLOCK_HOOKS` to its
    activations; ``prev_step`` is the previous block's step (None for block 0).

    Returns ``(stats, step)``."""
    attn, mlp = block["hook_attn_out"], block["hook_mlp_out"]
    step = block["hook_resid_post"] - block["hook_resid_pre"]
    a_share, a_cos = _share_and_cos(attn, step)
    m_share, m_cos = _share_and_cos(mlp, step)
    inertia = (
        torch.full_like(a_cos, float("nan"))
        if prev_step is None
        else F.cosine_similarity(step, prev_step, dim=-1)
    )
    stats = {
        "step_norm": step.norm(dim=-1), "attn_norm": attn.norm(dim=-1),
        "mlp_norm": mlp.norm(dim=-1), "attn_share": a_share, "mlp_share": m_share,
        "attn_cos": a_cos, "mlp_cos": m_cos, "inertia_cos": inertia,
    }
    return stats, step


def lens_stats(
    model: HookedTransformer,
    resid_post: Float[Tensor, "n_positions d_model"],
    targets: Int[Tensor, "n_positions 2"],
    has_next: Bool[Tensor, "n_positions"],
    *,
    normalize_lens: bool,
    chunk_size: int,
) -> dict[str, Tensor]:
    """The nearest-embedding and lens-rank columns of one layer; ``targets`` holds the model's
    final top-1 token and the next token of each position."""
    lens = lens_ranks(model, resid_post, targets, normalize=normalize_lens, chunk_size=chunk_size)
    nan_next = torch.where(has_next, 0.0, float("nan"))
    return {
        "nearest_dist": lens["nearest_dist"], "nearest_token": lens["nearest_token"],
        "dlens_rank_top1": lens["dlens_rank"][:, 0].double(),
        "dlens_rank_next": lens["dlens_rank"][:, 1].double() + nan_next,
        "logit_rank_top1": lens["logit_rank"][:, 0].double(),
        "logit_rank_next": lens["logit_rank"][:, 1].double() + nan_next,
    }


@torch.no_grad()
def trajectory_stats(
    model: HookedTransformer,
    tokens: TextInput,
    lengths: Int[Tensor, "batch"] | None = None,
    *,
    normalize_lens: bool = False,
    chunk_size: int = 8192,
) -> pd.DataFrame:
    """Per-(sequence, position, layer) movement statistics and lens ranks for one batch.

    Args:
        model: any HookedTransformer with sequential attention/MLP blocks.
        tokens: a text, a list of texts (``batch_idx`` = the text's index) or token ids
            (`geomlens.data.inputs.as_sequences`); right-padded [batch, pos] ids with ``lengths``.
        lengths: valid length of each row of a [batch, pos] tensor (None = all positions valid,
            or the texts' own lengths). Rows are emitted
            only for ``pos < length``; padding never affects them in a causal model.
        normalize_lens: False = the distance lens and nearest-embedding columns use the raw
            residual stream ``resid_post``; True = they use it normalised as by ``ln_final``
            (without its gain), i.e. the vector ``ln_final.hook_normalized`` would record.
            The logit lens always applies the full ``ln_final`` then ``unembed``.
        chunk_size: vocabulary rows per distance/logit chunk (memory vs speed).

    Returns:
        A DataFrame with the columns described in this module's docstring, one row per
        (batch_idx, pos, layer), sorted in that order.
    """
    if not (isinstance(tokens, Tensor) and tokens.ndim == 2):
        if lengths is not None:
            raise InputError("trajectory_stats: lengths goes with [batch, pos] token ids only")
        tokens, lengths = as_batch(model, tokens, where="trajectory_stats")
    tokens = tokens.to(model.cfg.device)
    if lengths is None:
        lengths = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long)
    positions = ValidPositions.of(tokens, lengths.to(tokens.device))
    n_layers = model.cfg.n_layers
    wanted = set(hook_names(n_layers))
    _, cache = model.run_with_cache(
        tokens, names_filter=lambda name: name in wanted, return_type=None
    )

    def at(layer: int, hook: str) -> Float[Tensor, "n_positions d_model"]:
        return cache[f"blocks.{layer}.{hook}"][positions.batch_idx, positions.pos].float()

    last = at(n_layers - 1, "hook_resid_post")
    _, top1 = logit_ranks(model, last, positions.next_token[:, None], chunk_size=chunk_size)
    targets = torch.stack([top1, positions.next_token], dim=-1)
    per_layer: list[dict[str, Tensor]] = []
    prev_step = None
    for layer in range(n_layers):
        block = {hook: at(layer, hook) for hook in BLOCK_HOOKS}
        stats, prev_step = movement_stats(block, prev_step)
        per_layer.append(stats)
    n = len(targets)
    group = max(1, STACK_ROWS // max(1, n))
    for g0 in range(0, n_layers, group):  # layers stacked: one large matmul per vocabulary chunk
        layers = range(g0, min(n_layers, g0 + group))
        lens = lens_stats(model, torch.cat([at(layer, "hook_resid_post") for layer in layers]),
                          targets.repeat(len(layers), 1), positions.has_next.repeat(len(layers)),
                          normalize_lens=normalize_lens, chunk_size=chunk_size)
        for j, layer in enumerate(layers):
            per_layer[layer].update({k: v[j * n:(j + 1) * n] for k, v in lens.items()})
    return _frame(per_layer, positions, token_map(model).labels)


def _frame(per_layer: list[dict[str, Tensor]], positions: ValidPositions, labels) -> pd.DataFrame:
    """One row per (position, layer), in the order of `COLUMNS`; ``labels`` prints token ids."""
    n_layers = len(per_layer)
    data: dict[str, np.ndarray] = {
        "batch_idx": np.repeat(positions.batch_idx.cpu().numpy(), n_layers),
        "pos": np.repeat(positions.pos.cpu().numpy(), n_layers),
        "layer": np.tile(np.arange(n_layers), len(positions.pos)),
        "token_id": np.repeat(positions.token.cpu().numpy(), n_layers),
    }
    for name in STAT_COLUMNS + ("nearest_token",):  # [n_positions, layer] -> rows
        data[name] = torch.stack([stats[name].cpu() for stats in per_layer], dim=1).reshape(-1).numpy()
    data["nearest_token_id"] = data.pop("nearest_token")
    for text, ids in (("token", "token_id"), ("nearest_token", "nearest_token_id")):
        data[text] = token_texts(data[ids], labels)
    return pd.DataFrame(data)[list(COLUMNS)]


def token_texts(ids: np.ndarray, labels) -> np.ndarray:
    """``labels`` (a `TokenMap.labels`) of every id, decoding each distinct id once."""
    unique, inverse = np.unique(ids, return_inverse=True)
    return np.asarray(labels(unique.tolist()), dtype=object)[inverse.reshape(-1)]


def summarize_layers(df: pd.DataFrame, by: Sequence[str] = ("layer",)) -> pd.DataFrame:
    """Mean and median of every statistic per group (NaNs skipped).

    Returns one row per group with the ``by`` columns, ``n_tokens`` (rows in the group) and
    ``<stat>_mean`` / ``<stat>_median`` for each statistic column present in ``df`` (e.g.
    ``step_norm_mean``). Works with ``by=("domain", "layer")`` once a ``domain`` column exists.
    """
    by = list(by)
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise InputError(f"summarize_layers: columns {missing} not in the table")
    stats = [c for c in df.columns if c not in by and c not in TRAJECTORY_KEYS
             and pd.api.types.is_numeric_dtype(df[c])]
    grouped = df.groupby(by, sort=True)
    out = grouped[stats].agg(["mean", "median"])
    out.columns = [f"{c}_{s}" for c, s in out.columns]
    out.insert(0, "n_tokens", grouped.size())
    return out.reset_index()


@torch.no_grad()
def trajectory(
    model: HookedTransformer, text_or_tokens: TextInput
) -> Float[Tensor, "layer pos d_model"]:
    """The points ``h^0..h^n_layers`` of one sequence (``n_layers + 1`` of them).

    ``h^0`` is ``blocks.0.hook_resid_pre`` (the embedding, plus positional embedding for
    models that add one) and ``h^l`` is ``blocks.{l-1}.hook_resid_post``. A string is
    tokenized with ``model.to_tokens`` (the model's default BOS handling).
    """
    seqs = as_sequences(model, text_or_tokens, where="trajectory")
    if len(seqs) != 1:
        raise InputError(f"trajectory: give one sequence, not {len(seqs)}")
    tokens = seqs[0].reshape(1, -1)
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(
        tokens.to(model.cfg.device), names_filter=lambda name: name in names, return_type=None
    )
    return torch.stack([cache[name][0] for name in names], dim=0)
