"""Divergences between two next-token distributions given as logits (or log-probabilities).

    JSD(p ‖ q) = ½ KL(p ‖ m) + ½ KL(q ‖ m),   m = (p + q) / 2        (thesis eq. 5.6)

in nats by default (bounded by ln 2), or in bits (bounded by 1) with ``base="bits"``.
Terms with zero probability contribute 0 (0 · log 0 = 0).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

Base = Literal["nats", "bits"]
LN2 = math.log(2.0)


def _scale(base: Base) -> float:
    if base == "nats":
        return 1.0
    if base == "bits":
        return 1.0 / LN2
    raise ValueError(f"base must be 'nats' or 'bits', not {base!r}")


def _kl_terms(logp: Tensor, logq: Tensor) -> Tensor:
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))


def kl_divergence(
    p_logits: Float[Tensor, "*batch d_vocab"],
    q_logits: Float[Tensor, "*batch d_vocab"],
    *,
    dim: int = -1,
    base: Base = "nats",
) -> Float[Tensor, "*batch"]:
    """KL(softmax(p_logits) ‖ softmax(q_logits)) along ``dim`` (the last one for the shapes)."""
    logp = torch.log_softmax(p_logits, dim=dim)
    logq = torch.log_softmax(q_logits, dim=dim)
    return _kl_terms(logp, logq).sum(dim) * _scale(base)


def js_divergence_from_logprobs(
    logp: Float[Tensor, "*batch d_vocab"],
    logq: Float[Tensor, "*batch d_vocab"],
    *,
    dim: int = -1,
    base: Base = "nats",
) -> Float[Tensor, "*batch"]:
    """JSD from normalized log-probabilities (skips the two log-softmaxes)."""
    logm = torch.logaddexp(logp, logq) - LN2
    jsd = 0.5 * (_kl_terms(logp, logm).sum(dim) + _kl_terms(logq, logm).sum(dim))
    return jsd.clamp(0.0, LN2) * _scale(base)


def js_divergence(
    p_logits: Float[Tensor, "*batch d_vocab"],
    q_logits: Float[Tensor, "*batch d_vocab"],
    *,
    dim: int = -1,
    base: Base = "nats",
) -> Float[Tensor, "*batch"]:
    """JSD(softmax(p_logits) ‖ softmax(q_logits)) along ``dim``; in [0, ln 2] nats."""
    return js_divergence_from_logprobs(
        torch.log_softmax(p_logits, dim=dim), torch.log_softmax(q_logits, dim=dim), dim=dim, base=base
    )


def js_divergence_fast(
    p: Float[Tensor, "n_positions d_vocab"],
    p_sum_plogp: Float[Tensor, "n_positions"],
    q_logits: Float[Tensor, "n_positions d_vocab"],
    *,
    base: Base = "nats",
) -> Float[Tensor, "n_positions"]:
    """JSD(p ‖ softmax(q_logits)) with one exp and one log per entry (for many q per p).

    Uses JSD = ½ Σ p log p + ½ Σ q log q − Σ m log m with Σ q log q = Σ q·z − log Σ e^z
    (z = q_logits − max). ``p_sum_plogp`` = Σ p log p is computed once per p. Float32
    cancellation limits the absolute accuracy to about 1e-5 nats (tested against
    `js_divergence_from_logprobs`).
    """
    z = q_logits - q_logits.amax(-1, keepdim=True)
    q = z.exp()  # unnormalized
    norm = q.sum(-1)
    sum_qlogq = torch.einsum("nv,nv->n", q, z) / norm - norm.log()
    # m2 = 2m = p + q / Z;  Σ m log m = ½ Σ m2 log m2 − ln 2   (Σ m2 = 2)
    m2 = torch.addcmul(p, q, norm.reciprocal()[:, None], out=q)
    sum_mlogm = 0.5 * torch.xlogy(m2, m2).sum(-1) - LN2  # xlogy: 0 log 0 = 0
    jsd = 0.5 * p_sum_plogp + 0.5 * sum_qlogq - sum_mlogm
    return jsd.clamp(0.0, LN2) * _scale(base)
