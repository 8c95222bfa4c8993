"""Squared-distance heads: the log of a Gaussian kernel, and −d² with a per-token bias.

    gaussian      −d² / (2 σ_v²)     (eq. 4.5)   |V| parameters
    sq_dist_bias  −d² + b_v                      |V| parameters

Since −d² = −‖h‖² + 2 h·e_v − ‖e_v‖² and softmax ignores the −‖h‖² term,
``sq_dist_bias`` with b_v = ‖e_v‖² is exactly the tied head at twice the scale, and
``gaussian`` with σ_v = 1 starts as the tied head with a −‖e_v‖²/2 bias. Both compute their
logits with `DistanceHead.distance_logits` (``squared=True``; `geomlens.heads.distance`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor, nn

from geomlens.heads.distance import DistanceHead
from geomlens.heads.registry import register_head
from geomlens.heads.scales import TokenScale

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformerConfig


class GaussianHead(DistanceHead):
    """logits = −‖h − e_v‖² / (2 σ_v²), σ_v = softplus(ρ_v) (the log of an isotropic Gaussian
    kernel around each embedding row, without its normaliser).

    Args:
        sigma_init: initial σ_v (None: 1, which makes initial logit differences those of the tied
            head, i.e. the size of the linear head's).
    """

    has_token_scales = True

    def __init__(
        self, cfg: HookedTransformerConfig, embed: nn.Module, *, sigma_init: float | None = None
    ) -> None:
        super().__init__(cfg, embed)
        self.sigma0 = float(sigma_init) if sigma_init is not None else 1.0
        self.token_scale = TokenScale(cfg.d_vocab, self.sigma0)

    def sigma(self) -> Float[Tensor, "d_vocab"]:
        return self.token_scale()

    def logits(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.distance_logits(h, squared=True, col_scale=0.5 / self.sigma() ** 2)

    def set_token_prior(self, log_prior: Float[Tensor, "d_vocab"]) -> bool:
        """1/σ_v² = 1/σ0² − 2·log_prior_v / D², so that −D²/(2σ_v²) = −D²/(2σ0²) + log_prior_v:
        frequent tokens get a *wider* kernel (larger σ_v)."""
        D = self.typical_distance()
        inv_sq = (1.0 / self.sigma0**2 - 2.0 * log_prior.float() / D**2).clamp_min(1e-4)
        self.token_scale.set_(inv_sq.rsqrt())
        return True


class SqDistBiasHead(DistanceHead):
    """logits = −‖h − e_v‖² + b_v, b_v initialised to 0."""

    def __init__(self, cfg: HookedTransformerConfig, embed: nn.Module) -> None:
        super().__init__(cfg, embed)
        self.b_v: Float[Tensor, "d_vocab"] = nn.Parameter(torch.zeros(cfg.d_vocab, dtype=cfg.dtype))

    def logits(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.distance_logits(h, squared=True, col_bias=self.b_v.float())


register_head("gaussian", GaussianHead)
register_head("sq_dist_bias", SqDistBiasHead)
