"""Input checks shared by the commands' ``validate`` functions (run before a run dir exists):
the model name, the text source against the model's context, and layer indices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from geomlens.data.source import TextSource, check_text_source
from geomlens.errors import InputError
from geomlens.models.zoo import check_model_name


def check_layers(layers: Sequence[int], n_layers: int, *, flag: str = "--layers") -> None:
    """Every layer index must exist in a model with ``n_layers`` blocks."""
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise InputError(f"{flag}: layer(s) {bad} do not exist; the model has {n_layers} layers "
                         f"(0..{n_layers - 1})")


def check_model_inputs(cfg: Any, *, layers: Sequence[int] | None = None) -> None:
    """The model name is loadable, the text source reads cleanly and fits the model's context,
    and ``layers`` exist (where the model's size is known without loading it)."""
    entry = check_model_name(cfg.model)
    if isinstance(cfg, TextSource):
        check_text_source(cfg, n_ctx=entry.n_ctx if entry else None)
    if layers is not None and entry is not None:
        check_layers(layers, entry.n_layers)
