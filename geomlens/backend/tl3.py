"""TransformerLens 3: `HookedView` over a ``HookedTransformer`` (the only module of the backend
layer that imports it)."""

from __future__ import annotations

from typing import Any

from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.loading_from_pretrained import POST_NORM_ARCHITECTURES

from geomlens.backend.view import ModelView
from geomlens.errors import InputError

__all__ = ["HookedTransformer", "HookedTransformerConfig", "HookedView"]

PROCESSING_KEYS = ("fold_ln", "center_writing_weights", "center_unembed")


class HookedView(ModelView):
    """``W_E`` is ``model.W_E``: TransformerLens 3 already folds Gemma's √d_model into it."""

    backend = "tl3"
    model: HookedTransformer

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.model.W_E

    @property
    def embed_scale(self) -> float:
        """√d_model for Gemma (TransformerLens 3 and geomlens's converter fold it into W_E)."""
        arch = str(getattr(self.cfg, "original_architecture", "") or "")
        return float(self.d_model) ** 0.5 if arch.startswith("Gemma") else 1.0

    @property
    def qk_norm(self) -> bool:
        return bool(getattr(self.cfg, "use_qk_norm", False))

    def k_norm(self, layer: int) -> nn.Module | None:
        return self.model.blocks[layer].attn.k_norm if self.qk_norm else None

    def q_norm(self, layer: int) -> nn.Module | None:
        return self.model.blocks[layer].attn.q_norm if self.qk_norm else None

    def normed_heads(self, x: Tensor, batch: int, pos: int) -> Float[Tensor, "batch pos head_index d_head"]:
        """TransformerLens 3 normalises ``[batch·pos·head_index, d_head]`` (flattened)."""
        return x.reshape(batch, pos, -1, x.shape[-1])

    def attn_scale(self, layer: int) -> float:
        return float(self.model.blocks[layer].attn.attn_scale)

    @property
    def attn_softcap(self) -> float | None:
        cap = getattr(self.cfg, "attn_scores_soft_cap", -1.0)
        return float(cap) if cap is not None and cap > 0 else None

    @property
    def block_layout(self) -> str:
        if self.cfg.original_architecture in POST_NORM_ARCHITECTURES or self.cfg.parallel_attn_mlp:
            return "other"
        return "sandwich" if self.cfg.use_normalization_before_and_after else "pre_norm"

    def norm_gain(self, layer: int, name: str) -> Float[Tensor, "d_model"]:
        """``w`` (TransformerLens 3 loads Gemma's gains as 1 + w)."""
        norm = getattr(self.model.blocks[layer], name)
        if not hasattr(norm, "w") or hasattr(norm, "b"):
            raise InputError(f"{name} is a {type(norm).__name__}; only RMSNorm gains are read.")
        return norm.w

    def attn_types(self) -> list[str]:
        return [str(block.attn.attn_type) for block in self.model.blocks]

    def rotary_bases(self) -> list[float | None]:
        if self.cfg.positional_embedding_type != "rotary":
            return [None] * self.n_layers
        types = getattr(self.cfg, "attn_types", None) or ["global"] * self.n_layers
        local = getattr(self.cfg, "rotary_base_local", None)
        return [float(local) if t == "local" and local else float(self.cfg.rotary_base)
                for t in types]

    def processing(self) -> dict[str, Any]:
        info = getattr(self.model, "geomlens_info", {}).get("processing")
        return dict(info) if info else {key: False for key in PROCESSING_KEYS}
