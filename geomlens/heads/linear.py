"""Dot-product heads: ``linear`` (untied W_U h + b, eq. 4.1) and ``tied`` (W_E h)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor, nn

from geomlens.heads.base import Head
from geomlens.heads.registry import register_head

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformerConfig


class LinearHead(Head):
    """logits = h W_U + b_U with its own (untied) W_U: the baseline, |V|·d + |V| parameters.

    Initialised as TransformerLens's gpt2 init: W_U ~ N(0, initializer_range²), b_U = 0.
    """

    kernel_group = False

    def __init__(self, cfg: HookedTransformerConfig, embed: nn.Module) -> None:
        super().__init__(cfg, embed)
        self.W_U: Float[Tensor, "d_model d_vocab"] = nn.Parameter(
            torch.empty(cfg.d_model, cfg.d_vocab_out, dtype=cfg.dtype)
        )
        self.b_U: Float[Tensor, "d_vocab"] = nn.Parameter(torch.zeros(cfg.d_vocab_out, dtype=cfg.dtype))
        if self.W_U.device.type != "meta":
            nn.init.normal_(self.W_U, std=cfg.initializer_range)

    def logits(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        return h @ self.W_U + self.b_U


class TiedHead(Head):
    """logits = h W_Eᵀ: the embedding read back as the unembedding, no parameters of its own."""

    def logits(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        return h @ self.W_E.T

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        """The unembedding this head applies: W_Eᵀ itself (a view, not a parameter), so
        ``model.W_U`` works for a tied run as for a pretrained tied model."""
        return self.W_E.T

    @property
    def b_U(self) -> Float[Tensor, "d_vocab"]:
        """No bias: zeros on W_E's device and dtype."""
        return torch.zeros(self.W_E.shape[0], dtype=self.W_E.dtype, device=self.W_E.device)


register_head("linear", LinearHead)
register_head("tied", TiedHead)
