"""Token-set overlap between parameters and hidden states, and its paired-vs-shuffled test.

The two scores of Dar et al.'s (2022) evidence protocol (their interpretation-experiments
notebook, ``_batched_recall_metric`` and ``_batched_sim``), for sets of token ids:

    recall(A, B)  = |A ∩ B| / |B|            A = the parameter side, B = the hidden-state side
    jaccard(A, B) = |A ∩ B| / |A ∪ B|

Every unit i (a position, a neuron, a head coordinate) has a set on each side. `overlap_counts`
gives |A_j ∩ B_i| for *every* pair (j, i) at once (one sparse product), so the observed pairing
(j = i) and any shuffled pairing (j = π(i)) are read from the same matrix: `PairedTest` draws the
permutations, the mean over units of the shuffled pairing is the baseline, and the permutation
p = (1 + #{null mean >= observed}) / (1 + n_permutations) (`geomlens.metrics.stats`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.metrics.stats import bootstrap_ci, permutation_p_value

#: the scores `overlap_scores` computes
METRICS: tuple[str, ...] = ("recall", "jaccard")


def _indicator(sets: Int[Tensor, "n *width"], n_tokens: int) -> sp.csr_matrix:
    """Rows = units, columns = tokens, 1 where the token is in the unit's set (−1 = padding,
    repeated ids count once)."""
    ids = torch.as_tensor(sets).reshape(len(sets), -1).cpu().numpy()
    rows = np.repeat(np.arange(len(ids)), ids.shape[1])
    flat = ids.reshape(-1)
    ok = flat >= 0
    m = sp.csr_matrix((np.ones(int(ok.sum())), (rows[ok], flat[ok])), shape=(len(ids), n_tokens))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def overlap_counts(
    sets_a: Int[Tensor, "n_a *width_a"], sets_b: Int[Tensor, "n_b *width_b"], n_tokens: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(I, size_a, size_b): I[j, i] = |A_j ∩ B_i|, and the set sizes (distinct ids, −1 ignored).

    A set given as several rows of ids (e.g. the top-k tokens of the 5 neurons a position
    activates, ``[n, 5, k]``) is their union."""
    A, B = _indicator(sets_a, n_tokens), _indicator(sets_b, n_tokens)
    inter = (A @ B.T).toarray()
    return inter, np.asarray(A.sum(1)).ravel(), np.asarray(B.sum(1)).ravel()


def overlap_scores(
    sets_a: Int[Tensor, "n_a *width_a"], sets_b: Int[Tensor, "n_b *width_b"], n_tokens: int,
    metric: str,
) -> Float[np.ndarray, "n_a n_b"]:
    """S[j, i] = metric(A_j, B_i) for every pair (module doc); ``metric`` in `METRICS`."""
    inter, size_a, size_b = overlap_counts(sets_a, sets_b, n_tokens)
    if metric == "recall":
        return inter / np.maximum(size_b[None, :], 1)
    if metric == "jaccard":
        union = size_a[:, None] + size_b[None, :] - inter
        return inter / np.maximum(union, 1)
    raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")


@dataclass(kw_only=True)
class PairedResult:
    """The observed pairing of units against shuffled pairings."""

    value: float
    """Mean over units i of S[i, i]."""
    ci_low: float
    ci_high: float
    """Percentile bootstrap CI of ``value`` (units resampled)."""
    baseline: float
    """Mean over the permutations of the mean over units of S[π(i), i]."""
    baseline_sd: float
    """Standard deviation of that null mean over the permutations."""
    p: float
    """(1 + #{null >= value}) / (1 + n_permutations)."""
    n_units: int
    n_permutations: int


def shuffled_means(
    S: Float[np.ndarray, "n n"], n_permutations: int, *, seed: int = 0, chunk: int = 512
) -> Float[np.ndarray, " n_permutations"]:
    """Mean over units i of S[π(i), i] for ``n_permutations`` random permutations π, drawn as
    rows of one matrix (``Generator.permuted`` of ``arange(n)`` along axis 1, ``chunk`` rows
    at a time) and read with one gather per chunk."""
    n = S.shape[0]
    rng = np.random.default_rng(seed)
    cols = np.arange(n)
    out = np.empty(n_permutations)
    for start in range(0, n_permutations, chunk):
        m = min(chunk, n_permutations - start)
        perms = rng.permuted(np.broadcast_to(cols, (m, n)), axis=1)
        out[start : start + m] = S[perms, cols].mean(axis=1)
    return out


def paired_test(
    S: Float[np.ndarray, "n n"], *, n_permutations: int = 999, n_bootstrap: int = 1000,
    seed: int = 0,
) -> PairedResult:
    """Observed pairing (the diagonal of S) against ``n_permutations`` random re-pairings of the
    rows: unit i's second-side set is scored against the first-side set of unit π(i)."""
    S = np.asarray(S, dtype=np.float64)
    n = S.shape[0]
    if S.shape != (n, n) or n < 2:
        raise ValueError(f"paired_test needs a square matrix of >= 2 units, got {S.shape}")
    diag = np.diagonal(S).copy()
    value, low, high = bootstrap_ci(diag, n_bootstrap=n_bootstrap, seed=seed)
    null = shuffled_means(S, n_permutations, seed=seed)
    return PairedResult(value=float(value), ci_low=float(low), ci_high=float(high),
                        baseline=float(null.mean()) if n_permutations else float("nan"),
                        baseline_sd=float(null.std()) if n_permutations else float("nan"),
                        p=permutation_p_value(float(diag.mean()), null) if n_permutations else float("nan"),
                        n_units=n, n_permutations=n_permutations)
