"""Position samples: one draw per sample, read by every batch (direct references below)."""

from __future__ import annotations

import torch

from geomlens.analysis.sampling import SEED_OFFSETS, rows_in_batch, sample_sorted, seeded


def test_sample_sorted_is_one_seeded_randperm():
    direct = torch.randperm(100, generator=torch.Generator().manual_seed(5))[:17].sort().values
    got = sample_sorted(100, 17, torch.Generator().manual_seed(5))
    assert torch.equal(got, direct) and len(set(got.tolist())) == 17
    assert torch.equal(sample_sorted(10, None, torch.Generator()), torch.arange(10))
    assert torch.equal(sample_sorted(10, 99, torch.Generator()), torch.arange(10))


def test_seeded_generators_follow_the_offsets():
    a = torch.rand(3, generator=seeded(4, "spearman"))
    assert torch.equal(a, torch.rand(3, generator=torch.Generator().manual_seed(4 + 7)))
    assert SEED_OFFSETS["spearman"] != SEED_OFFSETS["calibration"]


def test_rows_in_batch_equals_a_direct_mask():
    sampled = sample_sorted(50, 20, torch.Generator().manual_seed(0))
    for offset, n in [(0, 10), (10, 15), (25, 25), (49, 1)]:
        mask = (sampled >= offset) & (sampled < offset + n)
        assert torch.equal(rows_in_batch(sampled, offset, n, "cpu"), sampled[mask] - offset)
