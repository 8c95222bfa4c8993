"""``context_mlp``: logits = −‖h − e_v‖ · f(h) with f a small positive-output MLP (draft eq. 5.2).

    f(h) = softplus(W₂ silu(W₁ h + b₁) + b₂)        d_model·hidden + 2·hidden + 1 parameters

W₂ starts at zero and b₂ at softplus⁻¹(sqrt(d_model)), so f starts as the same constant scale as
``linear_scale`` (see `geomlens.heads.base`) and learns its dependence on context from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from geomlens.heads.distance import DistanceHead
from geomlens.heads.registry import register_head
from geomlens.heads.scales import softplus_inverse

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformerConfig


class ContextMLPHead(DistanceHead):
    """logits = −‖h − e_v‖ · softplus(MLP(h)).

    Args:
        hidden: width of the MLP's hidden layer.
        scale_init: initial f (None: sqrt(d_model)).
    """

    def __init__(
        self,
        cfg: HookedTransformerConfig,
        embed: nn.Module,
        *,
        hidden: int = 64,
        scale_init: float | None = None,
    ) -> None:
        super().__init__(cfg, embed)
        f0 = float(scale_init) if scale_init is not None else self.typical_norm()
        self.fc_in = nn.Linear(cfg.d_model, hidden)
        self.fc_out = nn.Linear(hidden, 1)
        if self.fc_out.weight.device.type != "meta":
            nn.init.zeros_(self.fc_out.weight)
            self.fc_out.bias.data.fill_(float(softplus_inverse(self.fc_out.bias.new_tensor(f0))))

    def scale(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos 1"]:
        """f(h) > 0."""
        return F.softplus(self.fc_out(F.silu(self.fc_in(h))).float())

    def logits(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.distance_logits(h, squared=False, row_scale=self.scale(h))


register_head("context_mlp", ContextMLPHead)
