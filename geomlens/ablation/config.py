"""`AblateConfig`: what `geomlens ablate` and the ``ablate`` command run (flags generated from it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from geomlens.config.base import choices
from geomlens.data.source import TextSource, text_field
from geomlens.errors import InputError

COMPONENTS = "geomlens.ablation.ablate:COMPONENTS"
METHODS = "geomlens.ablation.ablate:METHODS"


@dataclass(kw_only=True)
class AblateConfig(TextSource):
    model: str = "smollm2-135m"
    """Model name for `geomlens.models.load_model`."""
    component: str = field(default="attn_out", metadata=choices(COMPONENTS))
    """What to ablate (ignored by ``sweep``, which does attn_out and mlp_out apart)."""
    method: str = field(default="zero", metadata=choices(METHODS))
    """How to ablate it (see `geomlens.ablation.ablate`)."""
    layers: list[int] | None = None
    """Layers to ablate (all at once), or with ``sweep`` the layers to sweep; None = all."""
    sweep: bool = False
    """Ablate each layer x {attn_out, mlp_out} on its own (n_layers x 2 rows)."""
    max_tokens: int = text_field("max_tokens", 64)
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

    def validate(self) -> None:
        super().validate()
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            raise InputError(f"--layers must be layer indices >= 0, got {self.layers}")
        for name in ("batch_size", "k", "chunk_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.method == "resample" and self.batch_size < 2:
            raise InputError("--method resample needs --batch-size >= 2 (donors come from the batch)")
