"""Hook-level ablations of attention / MLP outputs, TransformerLens ``patching.py`` style.

One generic hook function, `patch_activation`, calls a small pure *setter* that returns the
replacement activation; setters are registered by name and specialised with
``functools.partial``. Each setter receives the activation ``[batch pos d_model]`` and the
mask of valid (non-padding) positions:

    zero      every position -> 0
    mean      every position -> the mean of the activation over the *batch's valid positions*
              (one d_model vector per batch and hook; no reference set is needed, and the mean
              over valid positions is unchanged by the ablation)
    resample  position p of sequence i -> the activation of sequence ``perm[i]`` at the same
              position p (``perm`` a seeded derangement of the batch, see `derangement`);
              where that source sequence is shorter than p (padding), the batch mean is used

Ablated hooks: ``blocks.{l}.hook_attn_out`` (component "attn_out") and
``blocks.{l}.hook_mlp_out`` ("mlp_out"); "both" ablates the two.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from geomlens.registry import Registry

Setter = Callable[..., Tensor]

COMPONENTS: Registry[tuple[str, ...]] = Registry("ablation component")
"""component name -> its hook names relative to ``blocks.{l}.`` (the choices of ``--component``)."""
METHODS: Registry[Setter] = Registry("ablation method")
"""ablation method name -> its setter (the choices of ``--method``)."""


def register_component(name: str, hooks: tuple[str, ...], *, help: str) -> None:
    """Register an ablatable component: the hooks (under ``blocks.{l}.``) it replaces."""
    COMPONENTS.register(name, hooks, help=help)


def register_setter(name: str, fn: Setter, *, help: str) -> None:
    """Register an ablation method: a setter ``(activation, valid, **kw) -> replacement``."""
    METHODS.register(name, fn, help=help)


register_component("attn_out", ("hook_attn_out",), help="the attention block's output")
register_component("mlp_out", ("hook_mlp_out",), help="the MLP block's output")
register_component("both", ("hook_attn_out", "hook_mlp_out"), help="attention and MLP outputs")


def _valid_mean(
    activation: Float[Tensor, "batch pos d_model"], valid: Bool[Tensor, "batch pos"]
) -> Float[Tensor, "d_model"]:
    return activation[valid].mean(0)


def zero_setter(
    activation: Float[Tensor, "batch pos d_model"], valid: Bool[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos d_model"]:
    return torch.zeros_like(activation)


def mean_setter(
    activation: Float[Tensor, "batch pos d_model"], valid: Bool[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos d_model"]:
    return _valid_mean(activation, valid).expand_as(activation).clone()


def resample_setter(
    activation: Float[Tensor, "batch pos d_model"],
    valid: Bool[Tensor, "batch pos"],
    *,
    perm: Int[Tensor, "batch"],
) -> Float[Tensor, "batch pos d_model"]:
    source = activation[perm]
    source_valid = valid[perm]
    return torch.where(source_valid[..., None], source, _valid_mean(activation, valid))


register_setter("zero", zero_setter, help="every position -> 0")
register_setter("mean", mean_setter, help="every position -> the batch mean over valid positions")
register_setter("resample", resample_setter,
                help="each sequence -> another sequence's activation at the same position")


def patch_activation(
    activation: Float[Tensor, "batch pos d_model"],
    *,
    hook,
    setter: Setter,
    valid: Bool[Tensor, "batch pos"],
) -> Float[Tensor, "batch pos d_model"]:
    """The one hook function: replace ``activation`` by ``setter(activation, valid)``."""
    return setter(activation, valid)


def derangement(n: int, *, generator: torch.Generator) -> Int[Tensor, "batch"]:
    """A random permutation with no fixed point (n >= 2): every sequence gets another's
    activations. Built as a random cyclic order, so it is seeded by ``generator`` alone."""
    if n < 2:
        raise ValueError("resample ablation needs at least 2 sequences per batch")
    order = torch.randperm(n, generator=generator)
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-1)
    return perm


def ablation_hooks(
    layers: Sequence[int],
    component: str,
    method: str,
    valid: Bool[Tensor, "batch pos"],
    *,
    perm: Int[Tensor, "batch"] | None = None,
) -> list[tuple[str, Callable]]:
    """``fwd_hooks`` that ablate ``component`` of every layer in ``layers`` at once."""
    hooks = COMPONENTS.get(component)
    setter = METHODS.get(method)
    if method == "resample":
        if perm is None:
            raise ValueError("resample ablation needs a permutation `perm`")
        setter = partial(setter, perm=perm.to(valid.device))
    fn = partial(patch_activation, setter=setter, valid=valid)
    return [(f"blocks.{layer}.{h}", fn) for layer in layers for h in hooks]
