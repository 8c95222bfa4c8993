"""`KVConfig`: what the ``kv`` run measures (thesis §5.2 first-layer K/V on a pretrained model).

Its flags (`geomlens kv --help`) are generated from these fields; the text-source group
(``--domains | --texts``, ``--n-segments``, ``--max-tokens``, ``--overflow``) is the one every
text-reading command shares, so ``kv`` and ``analyze`` tokenise the same text identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from geomlens.config.base import choices
from geomlens.data.source import TextSource, text_field
from geomlens.errors import InputError
from geomlens.kv.layer_map import MODES, check_spec


@dataclass(kw_only=True)
class KVConfig(TextSource):
    """Clean vs first-layer-K/V loss of a pretrained model, optionally with the layer sweeps."""

    model: str = "smollm2-135m"
    """Model name for `geomlens.models.load_model` (e.g. smollm2-135m, gemma3-270m)."""
    mode: str = field(default="all", metadata=choices(MODES))
    """"all": every position's K/V comes from the source layer; "prev": eq. 5.16, earlier
    positions from the source layer and the current token keeps its own layer's K/V."""
    layers: str = "all"
    """Which layers take whose K/V (`geomlens.kv.LayerMap` spec): all, >=m, 3,5,7, cla,
    first_of_type, or a layer_types string like 0_0_2_2."""
    max_tokens: int = text_field("max_tokens", 64)
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

    def validate(self) -> None:
        super().validate()
        check_spec(self.layers)
        for name in ("batch_size", "n_bootstrap"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
