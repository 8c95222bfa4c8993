"""KNN heads: logits are minus the distance to each embedding row, times a positive scale.

    neg_dist      −d                 (eq. 5.8)   0 parameters
    sigma         −d · σ_v           (eq. 5.9)   |V|
    linear_scale  −d · f(h)          (eq. 5.10)  d_model + 1
    hybrid        −d · σ_v · f(h)    (eq. 5.11)  |V| + d_model + 1

with d = ‖h − e_v‖, σ_v = softplus(ρ_v) and
f(h) = softplus(w·h + b) (`geomlens.heads.scales`). The thesis writes f(h) = w·h + b; the
softplus keeps the scale positive, so a larger distance always means a lower logit. Every head
computes its logits with `DistanceHead.distance_logits` (`geomlens.heads.distance`): one fused op.

Initial scales (see `geomlens.heads.base`): the total scale starts at ``sqrt(d_model)`` (σ_v for
``sigma``, f for ``linear_scale`` / ``hybrid`` with σ_v = 1), which gives initial logit
differences the size of the linear head's. ``neg_dist`` has no scale: its logit differences
start ~sqrt(d_model) times smaller, and the model can only grow them through ‖W_E‖ and the final
norm weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jaxtyping import Float
from torch import Tensor, nn

from geomlens.heads.distance import DistanceHead
from geomlens.heads.registry import register_head
from geomlens.heads.scales import ContextScale, TokenScale

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformerConfig


class NegDistHead(DistanceHead):
    """logits = −‖h − e_v‖."""

    def logits(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.distance_logits(h, squared=False)


class SigmaHead(DistanceHead):
    """logits = −‖h − e_v‖ · σ_v, one learned positive scale per token.

    Args:
        sigma_init: initial σ_v for every token (None: sqrt(d_model)).
    """

    has_token_scales = True

    def __init__(
        self, cfg: HookedTransformerConfig, embed: nn.Module, *, sigma_init: float | None = None
    ) -> None:
        super().__init__(cfg, embed)
        self.sigma0 = float(sigma_init) if sigma_init is not None else self.typical_norm()
        self.token_scale = TokenScale(cfg.d_vocab, self.sigma0)

    def sigma(self) -> Float[Tensor, "d_vocab"]:
        return self.token_scale()

    def logits(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.distance_logits(h, squared=False, col_scale=self.sigma())

    def set_token_prior(self, log_prior: Float[Tensor, "d_vocab"]) -> bool:
        """σ_v = σ0 − log_prior_v / D (D = typical distance): then −D·σ_v = −D·σ0 + log_prior_v,
        so frequent tokens get a *smaller* σ_v (a less negative logit at equal distance)."""
        D = self.typical_distance()
        self.token_scale.set_(self.sigma0 - log_prior.float() / D)
        return True


class LinearScaleHead(DistanceHead):
    """logits = −‖h − e_v‖ · f(h), f(h) = softplus(w·h + b): one context-dependent temperature.

    Args:
        scale_init: initial f (None: sqrt(d_model)).
    """

    def __init__(
        self, cfg: HookedTransformerConfig, embed: nn.Module, *, scale_init: float | None = None
    ) -> None:
        super().__init__(cfg, embed)
        self.f = ContextScale(cfg.d_model, scale_init if scale_init is not None else self.typical_norm())

    def logits(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.distance_logits(h, squared=False, row_scale=self.f(h))


class HybridHead(DistanceHead):
    """logits = −‖h − e_v‖ · σ_v · f(h): per-token and per-context scales (eq. 5.11).

    Args:
        sigma_init: initial σ_v (None: 1).
        scale_init: initial f (None: sqrt(d_model)).
    """

    has_token_scales = True

    def __init__(
        self,
        cfg: HookedTransformerConfig,
        embed: nn.Module,
        *,
        sigma_init: float | None = None,
        scale_init: float | None = None,
    ) -> None:
        super().__init__(cfg, embed)
        self.sigma0 = float(sigma_init) if sigma_init is not None else 1.0
        self.f0 = float(scale_init) if scale_init is not None else self.typical_norm()
        self.token_scale = TokenScale(cfg.d_vocab, self.sigma0)
        self.f = ContextScale(cfg.d_model, self.f0)

    def sigma(self) -> Float[Tensor, "d_vocab"]:
        return self.token_scale()

    def logits(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.distance_logits(h, squared=False, row_scale=self.f(h), col_scale=self.sigma())

    def set_token_prior(self, log_prior: Float[Tensor, "d_vocab"]) -> bool:
        """σ_v = σ0 − log_prior_v / (D·f0), the `SigmaHead` rule with the initial f folded in."""
        D = self.typical_distance()
        self.token_scale.set_(self.sigma0 - log_prior.float() / (D * self.f0))
        return True


register_head("neg_dist", NegDistHead)
register_head("sigma", SigmaHead)
register_head("linear_scale", LinearScaleHead)
register_head("hybrid", HybridHead)
