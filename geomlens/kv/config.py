"""`KVConfig`: what the ``kv`` run measures (thesis §5.2 first-layer K/V on a pretrained model)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from geomlens.errors import InputError
from geomlens.kv.layer_map import MODES, check_spec

logger = logging.getLogger(__name__)

OVERFLOWS = ("truncate", "window")


@dataclass(kw_only=True)
class KVConfig:
    """Clean vs first-layer-K/V loss of a pretrained model, optionally with the layer sweeps."""

    model: str = "smollm2-135m"
    """Model name for `geomlens.models.load_model` (e.g. smollm2-135m, gemma3-270m)."""
    mode: str = "all"
    """"all": every position's K/V comes from the source layer; "prev": eq. 5.16, earlier
    positions from the source layer and the current token keeps its own layer's K/V."""
    layers: str = "all"
    """Which layers take whose K/V (`geomlens.kv.LayerMap` spec): all, >=m, 3,5,7, cla,
    first_of_type, or a layer_types string like 0_0_2_2."""
    domains: list[str] | None = None
    """Bundled eval domains to use (None = all five). Ignored when ``texts`` is set."""
    texts: str | None = None
    """A local .jsonl/.txt file of segments instead of the bundled corpus (None = bundled)."""
    n_segments: int | None = 8
    """Segments per domain (first ones in file order; None = all)."""
    max_tokens: int = 64
    """Tokens per segment (same tokenisation as ``analyze``; no BOS where the tokenizer adds none)."""
    overflow: str = "truncate"
    """Tokens past ``max_tokens``: "truncate" (keep the first) or "window" (split)."""
    batch_size: int = 8
    """Segments per forward pass."""
    sweep: bool = False
    """Also run the per-layer sweep (only layer l takes layer 0's K/V, for each l ≥ 1) and the
    "layers ≥ m" curve (m = 1..L−1): 2·(L−1) more passes over the segments."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of segments for the 95% CIs."""
    seed: int = 0
    """Seeds the bootstrap (and torch, though nothing here is random)."""
    device: str | None = None
    """Torch device (None = cuda if available, else cpu)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, not {self.mode!r}.")
        check_spec(self.layers)
        if self.overflow not in OVERFLOWS:
            raise InputError(f"overflow must be 'truncate' or 'window', not {self.overflow!r}.")
        if self.n_segments is not None and self.n_segments < 1:
            raise InputError(f"n_segments must be >= 1 (or unset), got {self.n_segments}.")
        if self.max_tokens < 2:
            raise InputError(f"max_tokens must be >= 2 (a next-token loss needs 2), got {self.max_tokens}.")
        for name in ("batch_size", "n_bootstrap"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}.")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KVConfig:
        """Build from plain values; unknown keys are dropped with a warning."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            logger.warning("KVConfig: ignoring unknown keys %s", unknown)
        return cls(**{k: v for k, v in d.items() if k in names})
