"""Positive scales used by the kernel heads, both softplus-parametrised.

``TokenScale``    σ_v = softplus(ρ_v), one per vocabulary token (|V| parameters)
``ContextScale``  f(h) = softplus(w·h + b), one per position (d_model + 1 parameters)

Softplus keeps the scales positive without the exploding gradients of exp(); the raw parameter is
initialised with softplus⁻¹ of the wanted initial value, and ``w = 0`` so that f starts as the
constant ``init`` for every h (the head then starts as a scaled −d head).
"""

from __future__ import annotations

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


def softplus_inverse(y: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """x such that softplus(x) = y (y > 0); initialises the softplus-parametrised scales."""
    return y + torch.log(-torch.expm1(-y))


MIN_SCALE = 1e-4
"""Lower bound applied to scales set by `TokenScale.set_`, so that softplus⁻¹ stays finite."""


class TokenScale(nn.Module):
    """σ_v = softplus(ρ_v) > 0 for every token v."""

    def __init__(self, d_vocab: int, init: float, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.rho: Float[Tensor, "d_vocab"] = nn.Parameter(
            softplus_inverse(torch.full((d_vocab,), float(init), dtype=torch.float32)).to(dtype)
        )

    def forward(self) -> Float[Tensor, "d_vocab"]:
        return F.softplus(self.rho.float())

    @torch.no_grad()
    def set_(self, sigma: Float[Tensor, "d_vocab"]) -> None:
        """Set σ (clamped ≥ MIN_SCALE)."""
        raw = softplus_inverse(sigma.float().clamp_min(MIN_SCALE))
        self.rho.copy_(raw.to(self.rho.dtype))


class ContextScale(nn.Module):
    """f(h) = softplus(w·h + b) > 0, initialised to the constant ``init`` (w = 0)."""

    def __init__(self, d_model: int, init: float, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.w: Float[Tensor, "d_model"] = nn.Parameter(torch.zeros(d_model, dtype=dtype))
        self.b: Float[Tensor, ""] = nn.Parameter(
            softplus_inverse(torch.tensor(float(init))).to(dtype)
        )

    def forward(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos 1"]:
        z = einops.einsum(h.float(), self.w.float(), "batch pos d_model, d_model -> batch pos")
        return F.softplus(z + self.b.float()).unsqueeze(-1)
