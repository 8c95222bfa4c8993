"""Position samples of an analysis run, drawn once and read by every pass.

An analysis streams its positions in (sequence, position) order; a *stream index* numbers them
0..N-1. Spearman's rho, the layer lens and the calibration fit each work on a uniform sample of
stream indices drawn without replacement from their own seeded generator (`SEED_OFFSETS`), and
each captured batch reads the sampled indices it holds with `rows_in_batch`.
"""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

#: which generator each sample is drawn from: ``torch.Generator().manual_seed(seed + offset)``
SEED_OFFSETS = {"spearman": 7, "layer_lens": 11, "calibration": 11}


def sample_sorted(n: int, k: int | None, generator: torch.Generator) -> Int[Tensor, "k"]:
    """Sorted indices of ``k`` of ``range(n)`` drawn uniformly without replacement with one
    ``torch.randperm(n, generator=generator)``; all of ``range(n)`` (no draw) when ``k`` is None
    or >= n."""
    if k is None or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)[:k].sort().values


def seeded(seed: int, what: str) -> torch.Generator:
    """The generator of the sample ``what`` (a key of `SEED_OFFSETS`) for a run's ``seed``."""
    return torch.Generator().manual_seed(seed + SEED_OFFSETS[what])


def rows_in_batch(
    sampled: Int[Tensor, "n_sample"], offset: int, n_positions: int, device: torch.device | str
) -> Int[Tensor, "n_rows"]:
    """The sampled stream indices (sorted) that fall in the batch holding stream indices
    ``offset .. offset + n_positions - 1``, as rows of that batch, on ``device``."""
    lo, hi = torch.searchsorted(sampled, torch.tensor([offset, offset + n_positions]))
    return (sampled[lo:hi] - offset).to(device)
