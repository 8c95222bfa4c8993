"""Hooks that make a pretrained `HookedTransformer` attend to another layer's keys and values.

**Definition.** Layer l with source s = ``layer_map.source[l]`` uses layer s's keys *after
layer s's own key norm (if any) and before rotary*, rotated by layer l's own rotary, together
with layer s's values. Layer l keeps its queries, its causal mask and, for a local layer, its
sliding window. This is exactly what a KV cache holding only layer s produces (`geomlens.kv.cache`).

Modes:
``all``   every position's K/V comes from the source layer.
``prev``  eq. 5.16: the query at position i reads the source layer's K/V at positions j < i and
          layer l's *own* K/V at j = i.

Recipes, chosen from ``model.cfg`` (never from the model's name):
- no qk-norm (Llama, SmolLM2): copy the source's ``blocks.{s}.attn.hook_k`` and ``hook_v`` into
  layer l's. Exact.
- ``cfg.use_qk_norm`` (Gemma-3): the key norm runs after ``hook_k`` and has no hook of its own
  output, so copying ``hook_k`` would apply layer l's norm to layer s's raw keys, and copying
  ``hook_rot_k`` would keep layer s's rotary base (wrong in Gemma-3's global layers, base 1e6 vs
  1e4). A torch forward hook on ``blocks.{l}.attn.k_norm`` returns layer s's ``k_norm`` output
  instead; ``hook_v`` is patched as above.

``prev`` on top of that: layer l's own keys, values and (post-norm, pre-rotary) queries are kept,
and three hooks rewrite the diagonal: ``hook_attn_scores`` puts q_i·k_i(own)/scale on the diagonal
(rotary cancels at relative position 0), ``hook_pattern`` records its weight p_ii, and ``hook_z``
adds p_ii · (v_i(own) − v_i(source)). Right padding is fine; a masked diagonal stays masked.

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
from transformer_lens.utilities.activation_functions import apply_softcap

from geomlens.errors import InputError
from geomlens.kv.layer_map import MODES, LayerMap
from geomlens.models.backend import is_bridge, view_of

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

QK_NORM_ARCHITECTURES = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")


@dataclass
class KVStore:
    """Tensors captured during one forward pass, by layer (overwritten by the next pass)."""

    k: dict[int, Tensor] = field(default_factory=dict)
    """Source layers' keys (post-norm, pre-rotary; flattened to [-1, d_head] under qk-norm)."""
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


def key_recipe(cfg) -> str:
    """``"k_norm"`` when the keys are normalised after ``hook_k`` (Gemma-3), else ``"hook_k"``."""
    if cfg.original_architecture in QK_NORM_ARCHITECTURES:
        raise InputError(f"{cfg.original_architecture}'s key norm spans all heads; first-layer "
                         "K/V supports per-head qk-norm (Gemma-3) or none (Llama).")
    return "k_norm" if cfg.use_qk_norm else "hook_k"


def check_patchable(cfg, layer_map: LayerMap, mode: str) -> None:
    """One-line InputErrors for a map, mode or model the patch cannot serve."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, not {mode!r}.")
    if layer_map.n_layers != cfg.n_layers:
        raise InputError(f"The layer map has {layer_map.n_layers} layers; the model has {cfg.n_layers}.")
    if not layer_map.is_causal:
        raise InputError(f"Layer map {layer_map.spec!r} takes K/V from layers above their consumers "
                         "(as LCKV), which one forward pass cannot compute; use a map with "
                         "source[l] <= l.")
    key_recipe(cfg)


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


def _query_hook(q: Tensor, layer: int, *, store: KVStore, n_heads: int):
    """Keep a consumer's post-norm, pre-rotary queries as [batch pos head_index d_head]."""
    if q.ndim == 2:  # q_norm output is flattened; hook_v of this layer already fired
        b, p = store.own_v[layer].shape[:2]
        q = q.reshape(b, p, n_heads, q.shape[-1])
    store.q[layer] = q
    return None


def _diag_scores(attn, q: Tensor, k: Tensor) -> Float[Tensor, "batch head_index pos"]:
    """q_i · k_i / scale per head (softcap as the model applies it)."""
    k = k.reshape(q.shape[0], q.shape[1], -1, q.shape[-1])
    k = torch.repeat_interleave(k, q.shape[2] // k.shape[2], dim=2)
    diag = einops.einsum(q, k, "batch pos head_index d_head, batch pos head_index d_head -> batch head_index pos") / attn.attn_scale
    return apply_softcap(diag, attn.cfg.attn_scores_soft_cap)


def _diag_index(scores: Tensor) -> tuple[Tensor, Tensor]:
    q_len, k_len = scores.shape[-2:]
    rows = torch.arange(q_len, device=scores.device)
    return rows, rows + (k_len - q_len)


def _scores_hook(scores: Tensor, *, hook, attn, store: KVStore):
    layer = hook.layer()
    rows, cols = _diag_index(scores)
    diag = _diag_scores(attn, store.q[layer], store.own_k[layer]).to(scores.dtype)
    old = scores[:, :, rows, cols]
    scores = scores.clone()
    scores[:, :, rows, cols] = torch.where(old == attn.IGNORE.to(old.device), old, diag)
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
        model: the model (its cfg picks the recipe).
        layer_map: which layer reads which (`LayerMap`).
        mode: "all" or "prev".
        share: replace the consumers' K/V (True). False only captures what ``prev`` needs,
            for a forward pass whose KV cache already shares (`geomlens.kv.cache`).
    """
    check_patchable(model.cfg, layer_map, mode)
    if is_bridge(model) and view_of(model).qk_norm:
        raise InputError("First-layer K/V patching of a qk-norm model (Gemma-3) on TransformerLens 4 "
                         "is not validated (its patched loss differs from TransformerLens 3's); "
                         "use TransformerLens 3: pip install 'transformer-lens>=3.9,<4'")
    lm, store, recipe = layer_map, KVStore(), key_recipe(model.cfg)
    kw = dict(lm=lm, store=store, mode=mode, share=share)
    fwd: list[tuple[str, Callable]] = []
    mods: list[tuple[nn.Module, Callable]] = []
    layers = sorted(set(lm.sources) | set(lm.consumers))
    for layer in layers:
        fwd.append((f"blocks.{layer}.attn.hook_v", partial(_value_hook, **kw)))
        key_fn = partial(_key_hook, layer=layer, **kw)
        if recipe == "k_norm":
            mods.append((model.blocks[layer].attn.k_norm, _module_hook(key_fn)))
        else:
            fwd.append((f"blocks.{layer}.attn.hook_k", lambda k, *, hook, fn=key_fn: fn(k)))
    if mode == "prev":
        for layer in lm.consumers:
            attn = model.blocks[layer].attn
            q_fn = partial(_query_hook, layer=layer, store=store, n_heads=model.cfg.n_heads)
            if recipe == "k_norm":
                mods.append((attn.q_norm, _module_hook(q_fn)))
            else:
                fwd.append((f"blocks.{layer}.attn.hook_q", lambda q, *, hook, fn=q_fn: fn(q)))
            fwd += [(f"blocks.{layer}.attn.hook_attn_scores", partial(_scores_hook, attn=attn, store=store)),
                    (f"blocks.{layer}.attn.hook_pattern", partial(_pattern_hook, store=store)),
                    (f"blocks.{layer}.attn.hook_z", partial(_z_hook, lm=lm, store=store))]
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
