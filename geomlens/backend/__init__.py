"""The backend layer: the only place that knows which TransformerLens (3 or 4) runs a model.

`view_of(model)` returns a `ModelView` (hook names, ``ln_final``, ``W_E`` / ``W_U`` / ``b_U``,
soft-cap, GQA layout, qk-norm, rotary bases, config numbers). `resolve_backend` maps
``"auto" | "tl3" | "tl4"`` to the installed one.
"""

from __future__ import annotations

from typing import Any

from geomlens.backend.version import (
    BACKENDS,
    INSTALL,
    installed_backend,
    resolve_backend,
    tl_major,
)
from geomlens.backend.view import BlockHooks, ModelView
from geomlens.errors import MissingPackageError


def require_tl3(feature: str) -> Any:
    """The TransformerLens 3 module `geomlens.backend.tl3` (it re-exports
    ``HookedTransformer`` and ``HookedTransformerConfig``), or a one-line error naming the
    install command when TransformerLens 4 is installed."""
    if tl_major() >= 4:
        from importlib.metadata import version

        raise MissingPackageError(
            f"{feature} needs TransformerLens 3 (HookedTransformer); transformer-lens "
            f"{version('transformer-lens')} is installed: {INSTALL['tl3']}")
    from geomlens.backend import tl3

    return tl3


def is_bridge(model: Any) -> bool:
    """True for a TransformerLens 4 ``TransformerBridge`` (it wraps ``original_model``)."""
    return hasattr(model, "adapter") and hasattr(model, "original_model")


def view_of(model: Any) -> ModelView:
    """The `ModelView` of a loaded model (either backend)."""
    if isinstance(model, ModelView):
        return model
    if is_bridge(model):
        from geomlens.backend.tl4 import BridgeView

        return BridgeView(model)
    from geomlens.backend.tl3 import HookedView

    return HookedView(model)


__all__ = ["BACKENDS", "BlockHooks", "ModelView", "installed_backend", "is_bridge", "require_tl3",
           "resolve_backend", "tl_major", "view_of"]
