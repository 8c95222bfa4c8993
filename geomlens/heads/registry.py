"""LM heads by name: ``register_head``, ``build_head``, ``install_head``.

    head = install_head(model, "hybrid")     # replaces model.unembed, re-runs model.setup()
    logits, cache = model.run_with_cache(tokens)
    cache["unembed.hook_out"]                  # the head's logits, as for the stock Unembed
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformer_lens import HookedTransformer, HookedTransformerConfig

from geomlens.errors import InputError
from geomlens.heads.base import Head

HEADS: dict[str, type[Head]] = {}


def register_head(name: str, cls: type[Head]) -> type[Head]:
    """Register a head class under ``name``; raises ValueError on a duplicate name."""
    if name in HEADS:
        raise ValueError(f"Head {name!r} is already registered (by {HEADS[name].__name__}).")
    HEADS[name] = cls
    return cls


def list_heads() -> list[str]:
    """Registered head names, in registration order."""
    return list(HEADS)


def get_head_class(name: str) -> type[Head]:
    if name not in HEADS:
        raise InputError(f"Unknown head {name!r}. Available: {', '.join(HEADS)}")
    return HEADS[name]


def build_head(name: str, cfg: HookedTransformerConfig, embed: nn.Module, **kwargs: Any) -> Head:
    """Build head ``name`` for a model config, sharing the model's ``embed`` module."""
    cls = get_head_class(name)
    try:
        head = cls(cfg, embed, **kwargs)
    except TypeError as exc:
        raise InputError(f"Bad keyword arguments for head {name!r}: {exc}") from None
    W_E = embed.W_E
    if W_E.device.type != "meta":
        head.to(device=W_E.device)
    return head


def install_head(model: HookedTransformer, name: str, **kwargs: Any) -> Head:
    """Replace ``model.unembed`` by head ``name`` and re-run ``model.setup()`` (hook names)."""
    head = build_head(name, model.cfg, model.embed, **kwargs)
    model.unembed = head
    model.setup()
    return head
