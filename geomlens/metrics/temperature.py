"""Temperature fit: the τ > 0 that makes q = softmax(s / τ) closest to p in mean JSD.

    J(τ) = (1/n) Σ_i JSD(p_i ‖ softmax(s_i / τ))        over n positions (rows)

J is evaluated with `js_divergence_fast` (float32 per position, float64 mean) in row blocks,
so no temporary is larger than ``block_entries`` entries. τ → 0 makes q the one-hot argmax of
s and τ → ∞ makes it uniform, so J is flat at both ends; the search is over ln τ:

1. the scale: τ₀ = median_i std_v(s_i) / std_v(ln p_i) (s/τ₀ then spreads like the logits;
   1 when that is not a positive finite number);
2. a coarse grid ln τ₀ + k ln 10, k = −1, 0, 1 (one point per decade), extended by a decade at a
   time while the best point is at an edge, up to ``max_decades`` from τ₀;
3. bounded Brent (`scipy.optimize.minimize_scalar(method="bounded")`) on ln τ between the
   best grid point's neighbours (the grid's end for an end point), to ``xatol`` in ln τ; the
   better of it and the best grid point is returned.

For a J that is unimodal in ln τ (a single basin), step 3's bracket holds the minimum; the fit
says ``at_bound`` when the best point is still at the outermost grid point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from geomlens.metrics.divergence import Base, js_divergence_fast

GRID_DECADES = 1
"""The coarse grid starts at τ₀ · 10^k, k = −1, 0, 1."""
MAX_DECADES = 6
"""The grid is extended at most to τ₀ · 10^(±6)."""
XATOL = 0.01
"""Brent stops at this absolute tolerance in ln τ (1% in τ)."""
BLOCK_ENTRIES = 1 << 18
"""Rows of J are evaluated this many [position, token] entries at a time (1 MiB in float32)."""


@dataclass(frozen=True)
class TemperatureFit:
    """The fitted temperature and the objective there."""

    tau: float
    """The minimising temperature."""
    jsd: float
    """J(τ): the mean JSD over the fit positions at τ."""
    at_bound: bool
    """True when the best point is the outermost grid point (the minimum may lie beyond)."""
    n_evals: int
    """Evaluations of J."""


def tempered_jsd(
    p: Float[Tensor, "n_positions d_vocab"],
    logp: Float[Tensor, "n_positions d_vocab"],
    s: Float[Tensor, "n_positions d_vocab"],
    inv_tau: Float[Tensor, ""],
    base: Base = "nats",
) -> Float[Tensor, "n_positions"]:
    """JSD(p ‖ softmax(s · inv_tau)) per position (``inv_tau`` a 0-d tensor, so a compiled
    version serves every τ)."""
    return js_divergence_fast(p, logp, s * inv_tau, base=base)


def tempered_jsd_blocks(
    p: Float[Tensor, "n_positions d_vocab"],
    logp: Float[Tensor, "n_positions d_vocab"],
    s: Float[Tensor, "n_positions d_vocab"],
    tau: float,
    *,
    base: Base = "nats",
    call: Callable = lambda fn, *args: fn(*args),
    block_entries: int = BLOCK_ENTRIES,
) -> Float[Tensor, "n_positions"]:
    """`tempered_jsd` at τ, in row blocks of at most ``block_entries`` entries (their
    temporaries stay in cache: about twice as fast as whole matrices on a CPU).
    ``call(fn, *args)`` runs it (e.g. a `geomlens.analysis.fused.Fused`)."""
    rows = max(1, block_entries // max(1, s.shape[-1]))
    inv_tau = torch.tensor(1.0 / tau, dtype=s.dtype, device=s.device)
    return torch.cat([call(tempered_jsd, p[i:i + rows], logp[i:i + rows], s[i:i + rows], inv_tau,
                           base) for i in range(0, s.shape[0], rows)])


def mean_tempered_jsd(
    p: Float[Tensor, "n_positions d_vocab"],
    logp: Float[Tensor, "n_positions d_vocab"],
    s: Float[Tensor, "n_positions d_vocab"],
    tau: float,
    *,
    base: Base = "nats",
    call: Callable = lambda fn, *args: fn(*args),
    block_entries: int = BLOCK_ENTRIES,
) -> float:
    """J(τ): the float64 mean over rows of `tempered_jsd_blocks`."""
    values = tempered_jsd_blocks(p, logp, s, tau, base=base, call=call, block_entries=block_entries)
    return float(values.double().mean())


def temperature_scale(
    s: Float[Tensor, "n_positions d_vocab"], logp: Float[Tensor, "n_positions d_vocab"]
) -> float:
    """τ₀ = median over positions of std(s) / std(ln p) (1 if not positive and finite)."""
    ratio = s.float().std(dim=-1) / logp.float().std(dim=-1)
    ratio = ratio[torch.isfinite(ratio) & (ratio > 0)]
    tau0 = float(ratio.median()) if len(ratio) else 1.0
    return tau0 if math.isfinite(tau0) and tau0 > 0 else 1.0


def minimize_log_scale(
    objective: Callable[[float], float], scale: float, *, grid_decades: int = GRID_DECADES,
    max_decades: int = MAX_DECADES, xatol: float = XATOL,
) -> TemperatureFit:
    """Minimise ``objective(τ)`` over τ > 0 by the grid + bounded Brent search of the module
    docstring, around ``scale``."""
    from scipy.optimize import minimize_scalar

    memo: dict[float, float] = {}

    def f(log_tau: float) -> float:
        if log_tau not in memo:
            value = objective(math.exp(log_tau))
            memo[log_tau] = value if math.isfinite(value) else math.inf
        return memo[log_tau]

    step, centre = math.log(10.0), math.log(scale)
    ks = list(range(-grid_decades, grid_decades + 1))
    while True:
        best = min(ks, key=lambda k: f(centre + k * step))
        if best == ks[0] and -best < max_decades:
            ks.insert(0, best - 1)
        elif best == ks[-1] and best < max_decades:
            ks.append(best + 1)
        else:
            break
    at_bound = best in (ks[0], ks[-1])
    lo, hi = centre + max(best - 1, ks[0]) * step, centre + min(best + 1, ks[-1]) * step
    res = minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": xatol})
    log_tau = min([float(res.x), centre + best * step], key=f)
    return TemperatureFit(tau=math.exp(log_tau), jsd=f(log_tau), at_bound=at_bound,
                          n_evals=len(memo))


def fit_temperature(
    p: Float[Tensor, "n_positions d_vocab"],
    logp: Float[Tensor, "n_positions d_vocab"],
    s: Float[Tensor, "n_positions d_vocab"],
    *,
    base: Base = "nats",
    call: Callable = lambda fn, *args: fn(*args),
    xatol: float = XATOL,
) -> TemperatureFit:
    """The τ minimising J(τ) = mean_i JSD(p_i ‖ softmax(s_i / τ)) (see the module docstring)."""
    if s.shape != p.shape or s.shape[0] == 0:
        raise ValueError(f"fit_temperature needs matching non-empty p and s, got {tuple(p.shape)} "
                         f"and {tuple(s.shape)}")
    s = s.float()
    return minimize_log_scale(
        lambda tau: mean_tempered_jsd(p, logp, s, tau, base=base, call=call),
        temperature_scale(s, logp), xatol=xatol)

