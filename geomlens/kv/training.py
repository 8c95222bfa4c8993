"""First-layer K/V in a model trained from scratch (thesis Table 6.3).

`share_kv` installs the patch of `geomlens.kv.patch` permanently (mode "all") with no
``detach``: layer 0's keys and values feed every consumer layer, so layer 0's W_K/W_V receive
gradients from all of them. The consumers' own W_K, W_V, b_K, b_V (and key-norm weights) no
longer influence the output; `share_kv` sets ``requires_grad=False`` on them, which keeps them
out of the optimizer (no update, no weight decay). They stay in the state dict, so checkpoints
keep the standard layout; the training summary reports them as ``kv_unused_params``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from geomlens.kv.layer_map import LayerMap
from geomlens.kv.patch import install_kv_hooks

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


def unused_kv_parameters(model: HookedTransformer, layer_map: LayerMap) -> list[nn.Parameter]:
    """The K/V parameters of layers whose K/V come from another layer (mode "all")."""
    params = []
    for layer in layer_map.consumers:
        if layer_map.source[layer] == layer:
            continue
        attn = model.blocks[layer].attn
        names = ("_W_K", "_W_V", "_b_K", "_b_V") if hasattr(attn, "_W_K") else ("W_K", "W_V", "b_K", "b_V")
        params += [getattr(attn, n) for n in names]
        if getattr(attn, "k_norm", None) is not None:
            params += list(attn.k_norm.parameters())
    return params


def share_kv(model: HookedTransformer, spec: str) -> dict[str, object]:
    """Make the layers of ``spec`` (`LayerMap` spec) attend to their source's K/V for good.

    Returns ``{"layer_map", "unused_params"}``: the map and how many parameters were frozen.
    """
    layer_map = LayerMap.for_model(spec, model)
    install_kv_hooks(model, layer_map, "all")
    unused = unused_kv_parameters(model, layer_map)
    for p in unused:
        p.requires_grad_(False)
    return {"layer_map": layer_map, "unused_params": sum(p.numel() for p in unused)}
