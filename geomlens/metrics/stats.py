"""Statistics over segments: bootstrap confidence intervals, permutation p-values and the
random-matrix control."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor


def bootstrap_ci(
    values: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[Any, Any, Any]:
    """Percentile bootstrap CI of the mean over units (rows; e.g. per-segment means).

    Args:
        values: ``[n_units]`` or ``[n_units, n_metrics]``; NaNs are ignored (nanmean).
        n_bootstrap: resamples (with replacement) of the units.
        level: coverage of the interval.
        seed: seeds the resampling (numpy PCG64).

    Returns:
        ``(mean, low, high)``, each of shape ``values.shape[1:]`` (numpy floats for 1-D input).
    """
    x = np.asarray(values, dtype=np.float64)
    squeeze = x.ndim == 1
    if squeeze:
        x = x[:, None]
    n = x.shape[0]
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one unit")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, silently
        mean = np.nanmean(x, axis=0)
        boots = np.nanmean(x[idx], axis=1)
        alpha = (1.0 - level) / 2
        low = np.nanquantile(boots, alpha, axis=0)
        high = np.nanquantile(boots, 1 - alpha, axis=0)
    if squeeze:
        return mean[0], low[0], high[0]
    return mean, low, high


def permutation_p_value(observed: float, null: np.ndarray, *, greater: bool = True) -> float:
    """One-sided p-value with the +1 correction: (1 + #{null at least as extreme}) / (1 + n).

    ``greater=True`` tests "observed is larger than chance" (NDCG, Spearman, top-k);
    ``greater=False`` tests "smaller than chance" (JSD).
    """
    null = np.asarray(null, dtype=np.float64)
    hits = np.sum(null >= observed) if greater else np.sum(null <= observed)
    return float((1 + hits) / (1 + null.size))


def random_permutations(n: int, count: int, *, seed: int) -> list[Tensor]:
    """``count`` seeded random permutations of ``range(n)``."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=gen) for _ in range(count)]


def random_matrix_like(
    matrix: Float[Tensor, "d_vocab d_model"], *, seed: int
) -> Float[Tensor, "d_vocab d_model"]:
    """A Gaussian matrix with the same shape and the same distribution of row norms.

    Rows are isotropic Gaussian directions, each rescaled to the norm of a randomly chosen
    (without replacement) row of ``matrix``, so the multiset of row norms is identical.
    """
    gen = torch.Generator().manual_seed(seed)
    rows, cols = matrix.shape
    g = torch.randn(rows, cols, generator=gen, dtype=torch.float32)
    g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    norms = matrix.detach().float().norm(dim=-1).cpu()[torch.randperm(rows, generator=gen)]
    return (g * norms[:, None]).to(device=matrix.device, dtype=matrix.dtype)
