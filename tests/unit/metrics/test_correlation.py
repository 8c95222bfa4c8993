"""Spearman with average ranks against scipy."""

import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr

from geomlens.metrics.correlation import average_ranks, spearman


def test_average_ranks_match_scipy_with_ties():
    x = torch.tensor([[3.0, 1.0, 3.0, 2.0, 3.0, 0.5], [1.0, 1.0, 1.0, 1.0, 2.0, 0.0]])
    for row in range(2):
        np.testing.assert_allclose(average_ranks(x)[row].numpy(), rankdata(x[row].numpy()))
    y = torch.randn(3, 100)
    np.testing.assert_allclose(average_ranks(y).numpy(), rankdata(y.numpy(), axis=-1))


def test_spearman_matches_scipy():
    a, b = torch.randn(4, 500), torch.randn(4, 500)
    b = b + a  # correlated
    b[0, :50] = 1.0  # a block of ties
    ours = spearman(a, b).numpy()
    ref = [spearmanr(a[i].numpy(), b[i].numpy()).statistic for i in range(4)]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_spearman_properties():
    a = torch.randn(3, 200)
    torch.testing.assert_close(spearman(a, a.exp()), torch.ones(3))  # monotone -> 1
    torch.testing.assert_close(spearman(a, -a), -torch.ones(3))
    v = spearman(a, torch.randn(3, 200))
    assert bool((v.abs() <= 1).all())


def test_fast_spearman_from_centered_ranks_matches_scipy():
    from geomlens.metrics.correlation import centered_ranks, spearman_from_ranks

    a = torch.randn(3, 5000)
    b = a + 2 * torch.randn(3, 5000)
    b[1, :500] = 0.0  # ties
    ours = spearman_from_ranks(centered_ranks(a), centered_ranks(b)).numpy()
    ref = [spearmanr(a[i].numpy(), b[i].numpy()).statistic for i in range(3)]
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert abs(float(centered_ranks(a).sum(-1).abs().max())) < 1e-2  # centered exactly


def test_native_centered_ranks_match_torch():
    from geomlens import native
    from geomlens.metrics.correlation import average_ranks, centered_ranks

    if native.library("ranks") is None:
        pytest.skip("no native code")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 4001, generator=g)
    x[0, :300] = 0.25  # a block of ties
    x[1, ::2] = -0.0
    x[1, 1::2] = 0.0  # -0.0 == +0.0: one tie group
    x[2] = torch.round(x[2] * 3)  # many small tie groups
    expected = average_ranks(x) - (x.shape[-1] + 1) / 2
    torch.testing.assert_close(centered_ranks(x), expected, rtol=0, atol=0)
