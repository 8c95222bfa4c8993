"""Hooks that make a pretrained `HookedTransformer` attend to another layer's keys and values.

**Definition.** Layer l with source s = ``layer_map.source[l]`` uses layer s's keys *after
layer s's own key norm (if any) and before rotary*, rotated by layer l's own rotary, together
with layer s's values. Layer l keeps its queries, its causal mask and, for a local layer, its
sliding window. This is exactly what a KV cache holding only layer s produces (`geomlens.kv.cache`).

Modes:
``all``   every position's K/V comes from the source layer.
``prev``  eq. 5.16: the query at position i reads the source layer's K/V at positions j < i and
          layer l's *own* K/V at j = i.

Recipes, chosen from the model's view (`geomlens.backend.ModelView`, never from the
model's name); the same on TransformerLens 3 and 4:
- no qk-norm (Llama, SmolLM2): copy the source's ``blocks.{s}.attn.hook_k`` and ``hook_v`` into
  layer l's. Exact.
- qk-norm (Gemma-3, ``view.qk_norm``): the key norm runs after ``hook_k`` and no hook name shows
  its output on either backend, so copying ``hook_k`` would apply layer l's norm to layer s's raw
  keys, and copying ``hook_rot_k`` would keep layer s's rotary base (wrong in Gemma-3's global
  layers, base 1e6 vs 1e4). A torch forward hook on the key-norm module (``view.k_norm(l)``)
  returns layer s's key-norm output instead; ``hook_v`` is patched as above. The two backends
  lay that output out differently (TransformerLens 3: flattened ``[batch·pos·head, d_head]``;
  the bridge: ``[batch, head, pos, d_head]``); a source's output replaces a consumer's in the
  same layout, and ``view.normed_heads`` reads it as ``[batch, pos, head, d_head]``.

``prev`` on top of that: layer l's own keys, values and (post-norm, pre-rotary) queries are kept,
and three hooks rewrite the diagonal: ``hook_attn_scores`` puts q_i·k_i(own)/scale on the diagonal
(rotary cancels at relative position 0; scale and score soft-cap from the view), ``hook_pattern``
records its weight p_ii, and ``hook_z`` adds p_ii · (v_i(own) − v_i(source)). Right padding is
fine; a masked diagonal (−inf on both backends) stays masked.

GQA: ``hook_k``/``hook_v`` are [batch, pos, n_key_value_heads, d_head]; heads are repeated
only inside the diagonal fix. ``cfg.ungroup_grouped_query_attention`` is not needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import einops
import torch
from jaxtyping import Float
from torch import Tensor, nn

from geomlens.backend import ModelView, view_of
from geomlens.errors import InputError
from geomlens.kv.layer_map import MODES, LayerMap

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

QK_NORM_ARCHITECTURES = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")


@dataclass
class KVStore:
    """Tensors captured during one forward pass, by layer (overwritten by the next pass)."""

    k: dict[int, Tensor] = field(default_factory=dict)
    """Source layers' keys (post-norm, pre-rotary; under qk-norm in the key norm's own layout)."""
    v: dict[int, Tensor] = field(default_factory=dict)
    """Source layers' values [batch pos kv_head_index d_head]."""
    own_k: dict[int, Tensor] = field(default_factory=dict)
    own_v: dict[int, Tensor] = field(default_factory=dict)
    q: dict[int, Tensor] = field(default_factory=dict)
    """Consumers' queries (post-norm, pre-rotary) [batch pos head_index d_head] (prev only)."""
    p_diag: dict[int, Tensor] = field(default_factory=dict)
    """Consumers' attention weight on the own diagonal [batch head_index pos] (prev only)."""


@dataclass
class KVHooks:
    """The hooks of one patch: TransformerLens hooks plus torch forward hooks on modules."""

    fwd_hooks: list[tuple[str, Callable]]
    """``(hook name, fn(tensor, *, hook))`` for ``model.hooks(fwd_hooks=...)``."""
    module_hooks: list[tuple[nn.Module, Callable]]
    """``(module, fn(module, args, output))`` for ``module.register_forward_hook`` (qk-norm)."""
    store: KVStore


def key_recipe(model) -> str:
    """``"k_norm"`` when the keys are normalised after ``hook_k`` (Gemma-3), else ``"hook_k"``
    (``model``: a loaded model of either backend, or its view)."""
    view = view_of(model)
    arch = getattr(view.cfg, "original_architecture", None)
    if arch in QK_NORM_ARCHITECTURES:
        raise InputError(f"{arch}'s key norm spans all heads; first-layer "
                         "K/V supports per-head qk-norm (Gemma-3) or none (Llama).")
    return "k_norm" if view.qk_norm else "hook_k"


def check_patchable(model, layer_map: LayerMap, mode: str) -> None:
    """One-line InputErrors for a map, mode or model the patch cannot serve."""
    n_layers = view_of(model).n_layers
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, not {mode!r}.")
    if layer_map.n_layers != n_layers:
        raise InputError(f"The layer map has {layer_map.n_layers} layers; the model has {n_layers}.")
    if not layer_map.is_causal:
        raise InputError(f"Layer map {layer_map.spec!r} takes K/V from layers above their consumers "
                         "(as LCKV), which one forward pass cannot compute; use a map with "
                         "source[l] <= l.")
    key_recipe(model)


def _key_hook(out: Tensor, layer: int, *, lm: LayerMap, store: KVStore, mode: str, share: bool):
    if layer in lm.sources:
        store.k[layer] = out
    if layer in lm.consumers:
        if mode == "prev":
            store.own_k[layer] = out
        if share:
            return store.k[lm.source[layer]]
    return None


def _value_hook(v: Tensor, *, hook, lm: LayerMap, store: KVStore, mode: str, share: bool):
    layer = hook.layer()
    if layer in lm.sources:
        store.v[layer] = v
    if layer in lm.consumers:
        if mode == "prev":
            store.own_v[layer] = v
        if share:
            return store.v[lm.source[layer]]
    return None


def _heads(x: Tensor, layer: int, store: KVStore, view: ModelView, normed: bool) -> Tensor:
    """A stored query or key as [batch pos head_index d_head]. A q/k-norm output (``normed``)
    is read through the view; hook_v of this layer has fired, so it gives batch and pos."""
    if not normed:
        return x
    b, p = store.own_v[layer].shape[:2]
    return view.normed_heads(x, b, p)


def _query_hook(q: Tensor, layer: int, *, store: KVStore):
    """Keep a consumer's post-norm, pre-rotary queries (read by `_scores_hook`)."""
    store.q[layer] = q
    return None


def _diag_scores(view: ModelView, layer: int, q: Tensor, k: Tensor) -> Float[Tensor, "batch head_index pos"]:
    """q_i · k_i / scale per head (score soft-cap as the model applies it); q and k are
    [batch pos head_index d_head] (k with n_key_value_heads)."""
    k = torch.repeat_interleave(k, q.shape[2] // k.shape[2], dim=2)
    diag = einops.einsum(q, k, "batch pos head_index d_head, batch pos head_index d_head -> batch head_index pos") / view.attn_scale(layer)
    cap = view.attn_softcap
    return diag if cap is None else cap * torch.tanh(diag / cap)


def _diag_index(scores: Tensor) -> tuple[Tensor, Tensor]:
    q_len, k_len = scores.shape[-2:]
    rows = torch.arange(q_len, device=scores.device)
    return rows, rows + (k_len - q_len)


def _scores_hook(scores: Tensor, *, hook, view: ModelView, store: KVStore, normed: bool):
    layer = hook.layer()
    rows, cols = _diag_index(scores)
    q = _heads(store.q[layer], layer, store, view, normed)
    k = _heads(store.own_k[layer], layer, store, view, normed)
    diag = _diag_scores(view, layer, q, k).to(scores.dtype)
    old = scores[:, :, rows, cols]
    scores = scores.clone()
    scores[:, :, rows, cols] = torch.where(torch.isneginf(old), old, diag)
    return scores


def _pattern_hook(pattern: Tensor, *, hook, store: KVStore):
    rows, cols = _diag_index(pattern)
    store.p_diag[hook.layer()] = pattern[:, :, rows, cols]
    return None


def _z_hook(z: Tensor, *, hook, lm: LayerMap, store: KVStore):
    layer = hook.layer()
    dv = store.own_v[layer] - store.v[lm.source[layer]]
    dv = torch.repeat_interleave(dv, z.shape[2] // dv.shape[2], dim=2)
    return z + store.p_diag[layer].permute(0, 2, 1)[..., None].to(z.dtype) * dv


def _module_hook(fn: Callable[[Tensor], Tensor | None]) -> Callable:
    return lambda module, args, output: fn(output)


def kv_hooks(
    model: HookedTransformer, layer_map: LayerMap, mode: str = "all", *, share: bool = True
) -> KVHooks:
    """The hooks that give each consumer layer its source layer's K/V (module docstring).

    Args:
        model: the model, either backend (its view picks the recipe).
        layer_map: which layer reads which (`LayerMap`).
        mode: "all" or "prev".
        share: replace the consumers' K/V (True). False only captures what ``prev`` needs,
            for a forward pass whose KV cache already shares (`geomlens.kv.cache`).
    """
    check_patchable(model, layer_map, mode)
    view = view_of(model)
    lm, store, recipe = layer_map, KVStore(), key_recipe(view)
    kw = dict(lm=lm, store=store, mode=mode, share=share)
    fwd: list[tuple[str, Callable]] = []
    mods: list[tuple[nn.Module, Callable]] = []
    layers = sorted(set(lm.sources) | set(lm.consumers))
    for layer in layers:
        names = view.hooks(layer)
        fwd.append((names.v, partial(_value_hook, **kw)))
        key_fn = partial(_key_hook, layer=layer, **kw)
        if recipe == "k_norm":
            mods.append((view.k_norm(layer), _module_hook(key_fn)))
        else:
            fwd.append((names.k, lambda k, *, hook, fn=key_fn: fn(k)))
    if mode == "prev":
        for layer in lm.consumers:
            names = view.hooks(layer)
            q_fn = partial(_query_hook, layer=layer, store=store)
            if recipe == "k_norm":
                mods.append((view.q_norm(layer), _module_hook(q_fn)))
            else:
                fwd.append((names.q, lambda q, *, hook, fn=q_fn: fn(q)))
            fwd += [(names.attn_scores, partial(_scores_hook, view=view, store=store,
                                                normed=recipe == "k_norm")),
                    (names.pattern, partial(_pattern_hook, store=store)),
                    (names.z, partial(_z_hook, lm=lm, store=store))]
    return KVHooks(fwd_hooks=fwd, module_hooks=mods, store=store)


@contextlib.contextmanager
def patch_kv(
    model: HookedTransformer, layer_map: LayerMap, mode: str = "all", *, share: bool = True
) -> Iterator[KVHooks]:
    """Context manager: inside it every forward pass of ``model`` uses the patched K/V.

    >>> with patch_kv(model, LayerMap.parse("all", model.cfg.n_layers), "prev"):
    ...     logits = model(tokens)
    """
    hooks = kv_hooks(model, layer_map, mode, share=share)
    handles = [module.register_forward_hook(fn) for module, fn in hooks.module_hooks]
    try:
        with model.hooks(fwd_hooks=hooks.fwd_hooks):
            yield hooks
    finally:
        for handle in handles:
            handle.remove()


def install_kv_hooks(model: HookedTransformer, layer_map: LayerMap, mode: str = "all") -> KVHooks:
    """Install the patch permanently (survives ``model.reset_hooks()``), for training."""
    hooks = kv_hooks(model, layer_map, mode)
    for name, fn in hooks.fwd_hooks:
        model.add_hook(name, fn, is_permanent=True)
    for module, fn in hooks.module_hooks:
        module.register_forward_hook(fn)
    return hooks
