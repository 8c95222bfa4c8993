"""LM heads by name: ``register_head``, ``build_head``, ``install_head``.

    head = install_head(model, "hybrid")     # replaces model.unembed, re-runs model.setup()
    logits, cache = model.run_with_cache(tokens)
    cache["unembed.hook_out"]                  # the head's logits, as for the stock Unembed
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from geomlens.errors import InputError
from geomlens.heads.base import Head
from geomlens.registry import Registry, closest

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer, HookedTransformerConfig

HEADS: Registry[type[Head]] = Registry("head", providers=("geomlens.heads",))
"""Every LM head by name: the choices of ``geomlens train --head`` and the rows of Table 6.2."""


def register_head(name: str, cls: type[Head], *, help: str | None = None) -> type[Head]:
    """Register a head class under ``name`` (help: the first line of its docstring unless
    given); a duplicate name raises ValueError."""
    doc = help or (cls.__doc__ or name).strip().split("\n")[0]
    return HEADS.register(name, cls, help=doc)


def list_heads() -> list[str]:
    """Registered head names, in registration order."""
    return list(HEADS.names())


def get_head_class(name: str) -> type[Head]:
    """The head class ``name`` (an unknown name raises `InputError` naming the closest)."""
    return HEADS.get(name)


def check_head_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Every key of ``kwargs`` must be a keyword of head ``name``'s constructor."""
    import inspect

    params = inspect.signature(get_head_class(name).__init__).parameters
    allowed = [p for p in params if p not in ("self", "cfg", "embed")]
    for key in kwargs:
        if key not in allowed:
            raise InputError(f"--head-kwargs: head {name!r} has no option {key!r}."
                             f"{closest(key, allowed)} Options: {', '.join(allowed) or 'none'}")


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
