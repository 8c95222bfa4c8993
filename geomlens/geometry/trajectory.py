"""The residual stream as a trajectory through embedding space.

For a token at position ``pos`` the residual stream visits ``h^0 = embedding`` (the input of
block 0, ``blocks.0.hook_resid_pre``) and then ``h^l = blocks.{l-1}.hook_resid_post`` for
l = 1..n_layers. Block ``l`` (0-based, the ``layer`` column below) moves it by the step

    dh^l = blocks.{l}.hook_resid_post - blocks.{l}.hook_resid_pre
         = blocks.{l}.hook_attn_out + blocks.{l}.hook_mlp_out      (sequential blocks)

Per (sequence, position, layer) `trajectory_stats` records

    step_norm            ||dh^l||
    attn_norm, mlp_norm  ||attn_out||, ||mlp_out||
    attn_share           projection share <attn_out, dh>/||dh||^2 (likewise mlp_share); the two
                         shares sum to 1, either can be negative (a component that moves
                         against the step) or > 1.
    attn_cos, mlp_cos    cosine of each component with dh (0 when a vector is exactly 0)
    inertia_cos          cosine(dh^l, dh^(l-1)): does the stream keep its direction?
                         NaN for layer 0, which has no previous step.
    nearest_dist/_token  distance from h^(l+1) (= resid_post of block l) to its nearest W_E row
                         and that row's token; same h as the distance lens (see ``normalize_lens``)
    dlens_rank_top1/next distance-lens rank (0 = closest embedding, see `geomlens.geometry.lens`)
                         of the model's final top-1 prediction / of the actual next token
    logit_rank_top1/next logit-lens rank (0 = highest logit of unembed(ln_final(resid_post)))
                         of the same two tokens; the *_next columns are NaN at the last valid
                         position of each sequence (there is no next token).

Activations are taken one batch at a time with ``run_with_cache(names_filter=...)`` and reduced
to these scalars before the next batch; no corpus of activations is ever kept.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from geomlens.errors import InputError
from geomlens.geometry.lens import lens_ranks, logit_ranks

#: columns of `trajectory_stats` that identify a row rather than measure something
ID_COLUMNS: tuple[str, ...] = ("batch_idx", "pos", "layer", "token", "nearest_token")
STAT_COLUMNS: tuple[str, ...] = (
    "step_norm", "attn_norm", "mlp_norm", "attn_share", "mlp_share", "attn_cos", "mlp_cos",
    "inertia_cos", "nearest_dist", "dlens_rank_top1", "dlens_rank_next", "logit_rank_top1",
    "logit_rank_next",
)
#: column order of `trajectory_stats`
COLUMNS: tuple[str, ...] = (
    "batch_idx", "pos", "layer", "token", *STAT_COLUMNS[:9], "nearest_token", *STAT_COLUMNS[9:]
)


def hook_names(n_layers: int) -> list[str]:
    """Full hook names `trajectory_stats` reads, per block: resid_pre, resid_post, attn_out,
    mlp_out. (``resid_mid`` = resid_pre + attn_out and ``ln_final.hook_normalized`` are not
    needed: the tests check those identities, and the lens re-applies ``ln_final``.)"""
    hooks = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
    return [f"blocks.{layer}.{h}" for layer in range(n_layers) for h in hooks]


def _share_and_cos(
    comp: Float[Tensor, "n_tokens d_model"], step: Float[Tensor, "n_tokens d_model"]
) -> tuple[Float[Tensor, "n_tokens"], Float[Tensor, "n_tokens"]]:
    dot = (comp * step).sum(-1)
    share = dot / step.pow(2).sum(-1)
    return share, F.cosine_similarity(comp, step, dim=-1)


@torch.no_grad()
def trajectory_stats(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, "batch"] | None = None,
    *,
    normalize_lens: bool = False,
    chunk_size: int = 8192,
) -> pd.DataFrame:
    """Per-(sequence, position, layer) movement statistics and lens ranks for one batch.

    Args:
        model: any HookedTransformer with sequential attention/MLP blocks.
        tokens: right-padded token ids.
        lengths: valid length of each row (None = all positions valid). Rows are emitted
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
    if tokens.ndim != 2:
        raise InputError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
    batch, n_pos = tokens.shape
    device = model.cfg.device
    tokens = tokens.to(device)
    if lengths is None:
        lengths = torch.full((batch,), n_pos, dtype=torch.long)
    lengths = lengths.to(device)
    n_layers = model.cfg.n_layers
    wanted = set(hook_names(n_layers))
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in wanted, return_type=None)

    valid = torch.arange(n_pos, device=device)[None, :] < lengths[:, None]
    b_idx, p_idx = valid.nonzero(as_tuple=True)
    has_next = p_idx + 1 < lengths[b_idx]
    next_tok = torch.where(has_next, tokens[b_idx, (p_idx + 1).clamp_max(n_pos - 1)], 0)

    def at(name: str) -> Float[Tensor, "n_tokens d_model"]:
        return cache[name][b_idx, p_idx].float()

    last = at(f"blocks.{n_layers - 1}.hook_resid_post")
    _, top1 = logit_ranks(model, last, next_tok[:, None], chunk_size=chunk_size)
    targets = torch.stack([top1, next_tok], dim=-1)

    cols: dict[str, list[Tensor]] = {c: [] for c in STAT_COLUMNS}
    cols["nearest_token"] = []
    prev_step = None
    for layer in range(n_layers):
        pre, post = at(f"blocks.{layer}.hook_resid_pre"), at(f"blocks.{layer}.hook_resid_post")
        attn, mlp = at(f"blocks.{layer}.hook_attn_out"), at(f"blocks.{layer}.hook_mlp_out")
        step = post - pre
        a_share, a_cos = _share_and_cos(attn, step)
        m_share, m_cos = _share_and_cos(mlp, step)
        inertia = (
            torch.full_like(a_cos, float("nan"))
            if prev_step is None
            else F.cosine_similarity(step, prev_step, dim=-1)
        )
        prev_step = step
        lens = lens_ranks(model, post, targets, normalize=normalize_lens, chunk_size=chunk_size)
        nan_next = torch.where(has_next, 0.0, float("nan"))
        for name, val in (
            ("step_norm", step.norm(dim=-1)), ("attn_norm", attn.norm(dim=-1)),
            ("mlp_norm", mlp.norm(dim=-1)), ("attn_share", a_share), ("mlp_share", m_share),
            ("attn_cos", a_cos), ("mlp_cos", m_cos), ("inertia_cos", inertia),
            ("nearest_dist", lens["nearest_dist"]), ("nearest_token", lens["nearest_token"]),
            ("dlens_rank_top1", lens["dlens_rank"][:, 0].double()),
            ("dlens_rank_next", lens["dlens_rank"][:, 1].double() + nan_next),
            ("logit_rank_top1", lens["logit_rank"][:, 0].double()),
            ("logit_rank_next", lens["logit_rank"][:, 1].double() + nan_next),
        ):
            cols[name].append(val.detach().cpu())

    n_tok = len(b_idx)
    data: dict[str, np.ndarray] = {
        "batch_idx": np.repeat(b_idx.cpu().numpy(), n_layers),
        "pos": np.repeat(p_idx.cpu().numpy(), n_layers),
        "layer": np.tile(np.arange(n_layers), n_tok),
        "token": np.repeat(tokens[b_idx, p_idx].cpu().numpy(), n_layers),
    }
    for name in STAT_COLUMNS + ("nearest_token",):
        data[name] = torch.stack(cols[name], dim=1).reshape(-1).numpy()  # [n_tokens*layer]
    return pd.DataFrame(data)[list(COLUMNS)]


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
    stats = [c for c in df.columns if c not in by and c not in ID_COLUMNS
             and pd.api.types.is_numeric_dtype(df[c])]
    grouped = df.groupby(by, sort=True)
    out = grouped[stats].agg(["mean", "median"])
    out.columns = [f"{c}_{s}" for c, s in out.columns]
    out.insert(0, "n_tokens", grouped.size())
    return out.reset_index()


@torch.no_grad()
def trajectory(
    model: HookedTransformer, text_or_tokens: str | Int[Tensor, "pos"] | Int[Tensor, "1 pos"]
) -> Float[Tensor, "layer pos d_model"]:
    """The points ``h^0..h^n_layers`` of one sequence (``n_layers + 1`` of them).

    ``h^0`` is ``blocks.0.hook_resid_pre`` (the embedding, plus positional embedding for
    models that add one) and ``h^l`` is ``blocks.{l-1}.hook_resid_post``. A string is
    tokenized with ``model.to_tokens`` (the model's default BOS handling).
    """
    if isinstance(text_or_tokens, str):
        if not text_or_tokens.strip():
            raise InputError("trajectory: the text is empty.")
        tokens = model.to_tokens(text_or_tokens)
    else:
        tokens = text_or_tokens.reshape(1, -1)
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(
        tokens.to(model.cfg.device), names_filter=lambda n: n in names, return_type=None
    )
    return torch.stack([cache[n][0] for n in names], dim=0)
