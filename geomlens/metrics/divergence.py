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


def base_scale(base: Base) -> float:
    """The factor from nats to ``base`` (1 for nats, 1/ln 2 for bits)."""
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
    return _kl_terms(logp, logq).sum(dim) * base_scale(base)


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
    return jsd.clamp(0.0, LN2) * base_scale(base)


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


def xlogx(x: Tensor) -> Tensor:
    """x · log x with 0 · log 0 = 0, for x >= 0 (NaN stays NaN): `torch.xlogy(x, x)` without
    its NaN test, which inductor cannot vectorize (one scalar loop per 16 entries)."""
    return torch.where(x > 0, x * x.log(), x * 0.0)


def jsd_terms(
    p: Tensor, p_logp: Tensor, q: Tensor, logq: Tensor
) -> Tensor:
    """The per-entry terms ½ (p log p + q log q) − m log m (m = (p + q)/2) whose sum over the
    vocabulary is JSD(p ‖ q); each is >= 0, so the sum has no cancellation."""
    m = 0.5 * (p + q)
    return 0.5 * (p_logp + q * logq) - xlogx(m)


def js_divergence_fast(
    p: Float[Tensor, "n_positions d_vocab"],
    logp: Float[Tensor, "n_positions d_vocab"],
    q_logits: Float[Tensor, "n_positions d_vocab"],
    *,
    base: Base = "nats",
) -> Float[Tensor, "n_positions"]:
    """JSD(p ‖ softmax(q_logits)) for a p given with its log (for many q per p).

    Sums ½ (p log p + q log q) − m log m entry by entry (m = (p + q)/2): every term is >= 0 and
    of the order of p + q, so the float32 sum has no cancellation (the three entropies it
    equals are each several nats). One exp and one log per entry; element-wise and row
    reductions only, so `torch.compile` fuses it (tested against
    `js_divergence_from_logprobs`).
    """
    return js_divergence_and_lse(p, logp, q_logits, base=base)[0]


def js_divergence_and_lse(
    p: Float[Tensor, "n_positions d_vocab"],
    logp: Float[Tensor, "n_positions d_vocab"],
    q_logits: Float[Tensor, "n_positions d_vocab"],
    *,
    base: Base = "nats",
) -> tuple[Float[Tensor, "n_positions"], Float[Tensor, "n_positions 1"]]:
    """`js_divergence_fast` and q's log-normalizer log Σ exp(q_logits) (so that q's own
    probabilities, exp(q_logits − lse), need no second pass)."""
    top = q_logits.amax(-1, keepdim=True)
    z = q_logits - top
    e = z.exp()
    norm = e.sum(-1, keepdim=True)
    q = e.div_(norm)
    logq = z.sub_(norm.log())
    # `jsd_terms` entry for entry (the same roundings, tested), in 6 temporaries instead of 14
    m = (p + q).mul_(0.5)
    terms = (p * logp).add_(q.mul_(logq)).mul_(0.5)
    terms.sub_(m.log().mul_(m).masked_fill_(m <= 0, 0.0))  # xlogx(m)
    return terms.sum(-1).clamp(0.0, LN2) * base_scale(base), top + norm.log()
