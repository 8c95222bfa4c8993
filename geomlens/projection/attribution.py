"""The movement view: which neurons and heads make up one step Δh^l of one token.

Block l moves the token at position ``pos`` by Δh^l = attn_out^l + mlp_out^l
(`geomlens.geometry.trajectory`). Both outputs split exactly into parts:

    mlp_out  = Σ_n act_n · W_out[n]  + b_out          act = ``blocks.l.mlp.hook_post``
    attn_out = Σ_h z_h W_O[h]        + b_O            z   = ``blocks.l.attn.hook_z``

(z_h W_O[h] is what ``hook_result`` would record; it is computed here from ``hook_z`` so the
model's ``use_attn_result`` setting is left alone). Models with a norm after each sublayer
(Gemma: ``ln1_post``, ``ln2_post``, RMSNorm) scale the sum by w / rms(sum); with the scale
frozen at its value in the forward pass that map is linear, so each part is mapped by it and the
parts still sum to ``hook_attn_out`` / ``hook_mlp_out`` exactly (the frozen-scale convention).

Each part u gets
    step_proj   u · Δh / ‖Δh‖        its length along the step (the parts' values sum to ‖Δh‖)
    step_share  u · Δh / ‖Δh‖²       its share of the step (sums to 1 over all parts + biases)
    push        u · W_U[:, t] / ‖W_U[:, t]‖, t = the model's final top-1 token at ``pos``
                (direct effect, final norm ignored as for parameters)
    top_tokens  the tokens its vector u projects highest on through W_U (`project`)
and ranks (0 = largest) among all parts of its layer by step_proj and by push.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import einops
import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.backend import ModelView, view_of
from geomlens.data.token_map import token_map
from geomlens.errors import InputError
from geomlens.projection.kinds import token_matrix
from geomlens.projection.topk import vector_topk

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import ActivationCache, HookedTransformer

COLUMNS: tuple[str, ...] = (
    "layer", "component", "head", "neuron", "activation", "norm", "step_proj", "step_share",
    "push", "rank_step", "rank_push", "top_tokens", "pos", "token", "target_token",
)


def _frozen_post_norm(
    view: ModelView, cache: ActivationCache, layer: int, name: str, pos: int
) -> Float[Tensor, "d_model"]:
    """gain / scale of the post-sublayer RMSNorm ``name`` at ``pos``: the linear map it applies
    with its scale frozen at the forward pass's value."""
    return view.norm_gain(layer, name) / cache[f"blocks.{layer}.{name}.hook_scale"][0, pos]


def component_parts(
    model: HookedTransformer, cache: ActivationCache, layer: int, pos: int
) -> dict[str, Tensor]:
    """Per-head and per-neuron parts of one block's output at ``pos`` (batch row 0).

    Returns ``attn`` [head, d_model], ``attn_bias`` [1, d_model], ``mlp`` [d_mlp, d_model],
    ``mlp_bias`` [1, d_model] and ``mlp_act`` [d_mlp]; attn + attn_bias sums to
    ``hook_attn_out`` and mlp + mlp_bias to ``hook_mlp_out`` at ``pos``.
    """
    view = view_of(model)
    if view.block_layout == "other":
        raise InputError("step_attribution handles sequential pre-norm blocks only.")
    block = model.blocks[layer]
    b_O, b_out = view.output_biases(layer)
    z = cache[f"blocks.{layer}.attn.hook_z"][0, pos]  # [head, d_head]
    attn = einops.einsum(z, block.attn.W_O, "head_index d_head, head_index d_head d_model -> head_index d_model")
    attn_bias = b_O[None].clone()
    act = cache[f"blocks.{layer}.mlp.hook_post"][0, pos]  # [d_mlp]
    mlp = act[:, None] * block.mlp.W_out
    mlp_bias = b_out[None].clone()
    if view.block_layout == "sandwich":
        a = _frozen_post_norm(view, cache, layer, "ln1_post", pos)
        m = _frozen_post_norm(view, cache, layer, "ln2_post", pos)
        attn, attn_bias, mlp, mlp_bias = attn * a, attn_bias * a, mlp * m, mlp_bias * m
    return {"attn": attn, "attn_bias": attn_bias, "mlp": mlp, "mlp_bias": mlp_bias, "mlp_act": act}


def attribution_hooks(n_layers: int) -> list[str]:
    """Hooks `step_attribution` reads."""
    names = []
    for layer in range(n_layers):
        names += [f"blocks.{layer}.{h}" for h in ("hook_resid_pre", "hook_resid_post",
                  "attn.hook_z", "mlp.hook_post", "ln1_post.hook_scale", "ln2_post.hook_scale")]
    return names


def _ranks(x: Float[Tensor, "n"]) -> np.ndarray:
    order = torch.argsort(x, descending=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(len(x), device=x.device)
    return ranks.cpu().numpy()


RANKINGS = ("step", "push")
"""What a part can be chosen by: its step_proj rank, its push rank."""


def _chosen(parts, step, direction, top, rank_by=RANKINGS) -> dict[str, object]:
    """The ``top`` parts of one layer by each ranking in ``rank_by`` (union, by step_proj
    rank)."""
    U = torch.cat([parts["attn"], parts["mlp"]])  # [head + d_mlp, d_model]
    step_proj = U @ step / step.norm()
    push = U @ direction
    rank_step, rank_push = _ranks(step_proj), _ranks(push)
    chosen = np.flatnonzero((("step" in rank_by) & (rank_step < top))
                            | (("push" in rank_by) & (rank_push < top)))
    chosen = chosen[np.argsort(rank_step[chosen])]
    return {"U": U[torch.as_tensor(chosen)], "chosen": chosen, "step_proj": step_proj[chosen],
            "step_norm": step.norm(), "push": push[chosen], "rank_step": rank_step[chosen],
            "rank_push": rank_push[chosen], "n_heads": parts["attn"].shape[0],
            "act": parts["mlp_act"].float().cpu().numpy()}


def _layer_frame(layer: int, c: dict, top_tokens: list[str]) -> pd.DataFrame:
    chosen, n_heads, act = c["chosen"], c["n_heads"], c["act"]
    is_head = chosen < n_heads
    return pd.DataFrame({
        "layer": layer,
        "component": np.where(is_head, "attn", "mlp"),
        "head": pd.array([int(i) if h else pd.NA for i, h in zip(chosen, is_head)], dtype="Int64"),
        "neuron": pd.array([pd.NA if h else int(i - n_heads) for i, h in zip(chosen, is_head)],
                           dtype="Int64"),
        "activation": [np.nan if h else float(act[i - n_heads]) for i, h in zip(chosen, is_head)],
        "norm": c["U"].norm(dim=-1).double().cpu().numpy(),
        "step_proj": c["step_proj"].double().cpu().numpy(),
        "step_share": (c["step_proj"] / c["step_norm"]).double().cpu().numpy(),
        "push": c["push"].double().cpu().numpy(),
        "rank_step": c["rank_step"], "rank_push": c["rank_push"], "top_tokens": top_tokens,
    })


TOPK_ROWS = 256
"""Chosen parts projected through W_U per matmul (all layers' parts share the matmuls)."""


@torch.no_grad()
def attribution_from_run(
    model: HookedTransformer, tokens: Int[Tensor, "*batch pos"], logits: Float[Tensor, "pos d_vocab"],
    cache: ActivationCache, *, pos: int, layers: Sequence[int], top: int, n_tokens: int,
    rank_by: Sequence[str] = RANKINGS,
) -> pd.DataFrame:
    """`step_attribution` from a forward pass that cached `attribution_hooks` (``logits``: its
    logits at every position of batch row 0). ``rank_by``: the rankings whose ``top`` parts are
    kept (both: `step_attribution`'s union; the explorer's movers need only ``push``)."""
    unknown = set(rank_by) - set(RANKINGS)
    if unknown or not rank_by:
        raise InputError(f"rank_by must name some of {list(RANKINGS)}, got {list(rank_by)}")
    target = int(logits[pos].argmax())
    T = token_matrix(model, "W_U")
    direction = T[target] / T[target].norm()
    per_layer = []
    for layer in layers:
        step = (cache[f"blocks.{layer}.hook_resid_post"] - cache[f"blocks.{layer}.hook_resid_pre"])[0, pos]
        per_layer.append(_chosen(component_parts(model, cache, layer, pos), step, direction, top,
                                 tuple(rank_by)))
    _, ids = vector_topk(torch.cat([c["U"] for c in per_layer]), T, n_tokens, chunk_size=TOPK_ROWS)
    labels = token_map(model).labels(ids.reshape(-1).tolist())
    frames, at = [], 0
    for layer, c in zip(layers, per_layer):
        n = len(c["chosen"])
        frames.append(_layer_frame(layer, c, [" | ".join(labels[(at + i) * n_tokens:(at + i + 1) * n_tokens])
                                              for i in range(n)]))
        at += n
    out = pd.concat(frames, ignore_index=True)
    labels = token_map(model).labels([int(tokens.reshape(-1)[pos]), target])
    out["pos"], out["token"], out["target_token"] = pos, labels[0], labels[1]
    return out[list(COLUMNS)]


@torch.no_grad()
def step_attribution(
    model: HookedTransformer,
    tokens: Int[Tensor, "pos"] | Int[Tensor, "1 pos"] | str,
    *,
    pos: int = -1,
    layers: Sequence[int] | None = None,
    top: int = 10,
    n_tokens: int = 5,
) -> pd.DataFrame:
    """Which heads and neurons make up each step Δh^l of the token at ``pos`` (module doc).

    Returns, per layer, the union of the ``top`` parts by step_proj and the ``top`` by push,
    sorted by step_proj rank, with the columns `COLUMNS`. ``tokens`` may be text (tokenized
    with ``model.to_tokens``).
    """
    if isinstance(tokens, str):
        if not tokens.strip():
            raise InputError("step_attribution: the text is empty.")
        tokens = model.to_tokens(tokens)
    tokens = tokens.reshape(1, -1).to(model.cfg.device)
    n_pos = tokens.shape[1]
    if not -n_pos <= pos < n_pos:
        raise InputError(f"pos {pos} is outside the sequence of {n_pos} tokens")
    pos = pos % n_pos
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    wanted = set(attribution_hooks(model.cfg.n_layers))
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in wanted)
    return attribution_from_run(model, tokens, logits[0], cache, pos=pos, layers=layers, top=top,
                                n_tokens=n_tokens)
