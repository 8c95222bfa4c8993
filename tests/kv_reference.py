"""A hand-written reference for first-layer K/V, for tests: attention written out explicitly.

`reference_logits` runs the model with every layer's attention output ``hook_z`` replaced by
`reference_z`, which recomputes the layer's attention from scratch: projections with the weight
matrices, per-head RMS key/query norms, rotary embeddings (each layer's own base), the causal
mask and sliding window, GQA head grouping, and a softmax over an explicit loop of query
positions. Only the norms before attention, the MLPs and W_O are the model's own modules.

The definition it implements (`geomlens.kv.patch`): layer l attends to the keys of layer
s = source[l] taken after s's key norm and before rotary, rotated by layer l's rotary, and
to s's values; in ``prev`` mode the key/value at the query's own position are layer l's.
Supports rotary pre-norm (Llama/Gemma-like) configs without attention softcapping.
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from geomlens.errors import InputError
from geomlens.kv.layer_map import LayerMap


def rms(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """RMSNorm over the last dimension, times the weight."""
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate(
    x: Float[Tensor, "batch pos head d_head"], *, base: float | int, rotary_dim: int, adjacent: bool
) -> Float[Tensor, "batch pos head d_head"]:
    """Rotary embedding at positions 0..pos-1; dims ≥ rotary_dim pass through."""
    pos = torch.arange(x.shape[1], dtype=torch.float64)
    freq = base ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    angle = (pos[:, None] * freq[None, :])[None, :, None, :]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    r, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    if adjacent:
        a, b = r[..., 0::2], r[..., 1::2]
        out = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)
    else:
        a, b = r[..., : rotary_dim // 2], r[..., rotary_dim // 2 :]
        out = torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
    return torch.cat([out, rest], dim=-1)


def project(attn, x: Float[Tensor, "batch pos d_model"]) -> tuple[Tensor, Tensor, Tensor]:
    """(q post-norm, k post-norm, v), all before rotary, [batch pos head d_head]."""
    W_K = getattr(attn, "_W_K", None)
    W_K, W_V = (attn._W_K, attn._W_V) if W_K is not None else (attn.W_K, attn.W_V)
    b_K, b_V = (attn._b_K, attn._b_V) if hasattr(attn, "_b_K") else (attn.b_K, attn.b_V)
    q = einops.einsum(x, attn.W_Q, "batch pos d_model, head_index d_model d_head -> batch pos head_index d_head") + attn.b_Q
    k = einops.einsum(x, W_K, "batch pos d_model, head_index d_model d_head -> batch pos head_index d_head") + b_K
    v = einops.einsum(x, W_V, "batch pos d_model, head_index d_model d_head -> batch pos head_index d_head") + b_V
    if attn.cfg.use_qk_norm:
        q, k = rms(q, attn.q_norm.w, attn.cfg.eps), rms(k, attn.k_norm.w, attn.cfg.eps)
    return q, k, v


def reference_z(
    attn, q: Tensor, k_src: Tensor, v_src: Tensor, k_own: Tensor, v_own: Tensor, mode: str
) -> Float[Tensor, "batch pos head_index d_head"]:
    """Explicit attention of one layer: loop over query positions i, keys j ≤ i (in window)."""
    cfg = attn.cfg
    local = attn.attn_type == "local"
    base = cfg.rotary_base_local if local and cfg.rotary_base_local is not None else cfg.rotary_base
    rot = dict(base=base, rotary_dim=cfg.rotary_dim, adjacent=cfg.rotary_adjacent_pairs)
    q, k_src, k_own = rotate(q, **rot), rotate(k_src, **rot), rotate(k_own, **rot)
    group = q.shape[2] // k_src.shape[2]
    scale = cfg.attn_scale if cfg.use_attn_scale else 1.0
    z = torch.zeros_like(q)
    for i in range(q.shape[1]):
        lo = max(0, i - cfg.window_size + 1) if local else 0
        keys, values = k_src[:, lo : i + 1].clone(), v_src[:, lo : i + 1].clone()
        if mode == "prev":
            keys[:, -1], values[:, -1] = k_own[:, i], v_own[:, i]
        for h in range(q.shape[2]):
            scores = einops.einsum(q[:, i, h], keys[:, :, h // group], "batch d_head, batch key_pos d_head -> batch key_pos") / scale
            z[:, i, h] = einops.einsum(scores.softmax(-1), values[:, :, h // group], "batch key_pos, batch key_pos d_head -> batch d_head")
    return z


@torch.no_grad()
def reference_logits(
    model: HookedTransformer, tokens: Int[Tensor, "batch pos"], layer_map: LayerMap, mode: str = "all"
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of ``model`` with the K/V of ``layer_map`` computed by `reference_z`."""
    cfg = model.cfg
    if cfg.positional_embedding_type != "rotary" or cfg.attn_scores_soft_cap > 0:
        raise InputError("reference_logits supports rotary models without attention softcapping.")
    kept: dict[int, tuple[Tensor, Tensor]] = {}

    def z_hook(z: Tensor, *, hook) -> Tensor:
        layer = hook.layer()
        block = model.blocks[layer]
        q, k, v = project(block.attn, block.ln1(resid[layer]))
        kept[layer] = (k, v)
        k_src, v_src = kept[layer_map.source[layer]]
        return reference_z(block.attn, q, k_src, v_src, k, v, mode)

    resid: dict[int, Tensor] = {}

    def resid_hook(x: Tensor, *, hook) -> None:
        resid[hook.layer()] = x

    hooks = [(f"blocks.{layer}.hook_resid_pre", resid_hook) for layer in range(cfg.n_layers)]
    hooks += [(f"blocks.{layer}.attn.hook_z", z_hook) for layer in range(cfg.n_layers)]
    return model.run_with_hooks(tokens, fwd_hooks=hooks, return_type="logits")
