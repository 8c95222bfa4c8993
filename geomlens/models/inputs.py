"""Input checks shared by the commands' ``validate`` functions (run before a run dir exists):
the model name, the text source against the model's context, and layer indices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from geomlens.data.source import TextSource, check_segment_tokens, check_text_source
from geomlens.errors import InputError
from geomlens.models.tokenizer import load_tokenizer
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
        if entry is not None:  # an offline model's tokenizer loads without its weights
            check_segment_tokens(cfg, load_tokenizer(cfg.model))
    if layers is not None and entry is not None:
        check_layers(layers, entry.n_layers)


def available_memory() -> int | None:
    """Bytes this process can still allocate on the CPU (Linux ``MemAvailable``; None where
    unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(needed: int, what: str, fix: str) -> None:
    """Refuse a run whose ``needed`` bytes exceed the memory available now (before it starts,
    rather than being killed by the kernel half-way)."""
    free = available_memory()
    if free is not None and needed > free:
        raise InputError(f"{what} needs at least {needed / 2**30:,.1f} GiB but {free / 2**30:,.1f} "
                         f"GiB of memory is available; {fix}")
