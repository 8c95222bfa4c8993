"""`AblateConfig`: what `geomlens ablate` and the ``ablate`` experiment kind run."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from geomlens.ablation.ablate import COMPONENT_HOOKS, SETTERS
from geomlens.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class AblateConfig:
    model: str = "smollm2-135m"
    """Model name for `geomlens.models.load_model`."""
    component: str = "attn_out"
    """attn_out | mlp_out | both (ignored by ``sweep``, which does attn_out and mlp_out apart)."""
    method: str = "zero"
    """zero | mean | resample (see `geomlens.ablation.ablate`)."""
    layers: list[int] | None = None
    """Layers to ablate (all at once), or with ``sweep`` the layers to sweep; None = all."""
    sweep: bool = False
    """Ablate each layer x {attn_out, mlp_out} on its own (n_layers x 2 rows)."""
    domains: list[str] | None = None
    """Corpus domains of the eval split; None = all five."""
    n_segments: int = 20
    """Segments per domain."""
    max_tokens: int = 64
    """Tokens per segment (truncated; capped at the model's n_ctx)."""
    batch_size: int = 8
    """Sequences per forward pass (resample draws its donors within a batch)."""
    k: int = 10
    """k of NDCG@k."""
    chunk_size: int = 8192
    """Vocabulary rows per distance chunk."""
    seed: int = 0
    """Seed of the resample permutations."""
    device: str | None = None
    """Device (None = CUDA if available, else CPU)."""

    def __post_init__(self) -> None:
        if self.component not in COMPONENT_HOOKS:
            raise InputError(f"component must be one of {sorted(COMPONENT_HOOKS)}, not {self.component!r}")
        if self.method not in SETTERS:
            raise InputError(f"method must be one of {sorted(SETTERS)}, not {self.method!r}")
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            raise InputError(f"layers must be a non-empty list of layer indices >= 0, got {self.layers}")
        for name in ("n_segments", "batch_size", "k", "chunk_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_tokens < 2:
            raise InputError(f"max_tokens must be >= 2 (a next-token loss needs 2), got {self.max_tokens}")
        if self.method == "resample" and self.batch_size < 2:
            raise InputError("resample ablation needs batch_size >= 2 (donors come from the batch)")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AblateConfig":
        """Build from plain values (YAML/JSON); unknown keys are dropped with a warning."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            logger.warning("AblateConfig: ignoring unknown keys %s", unknown)
        return cls(**{k: v for k, v in d.items() if k in names})
