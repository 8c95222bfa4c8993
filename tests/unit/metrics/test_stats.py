"""Bootstrap CIs, permutation p-values and the random-matrix control."""

import numpy as np
import pytest
import torch
from scipy.stats import bootstrap

from geomlens.metrics.stats import (
    bootstrap_ci,
    permutation_p_value,
    random_matrix_like,
    random_permutations,
)


def test_bootstrap_ci_agrees_with_scipy_percentile():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=200)
    mean, lo, hi = bootstrap_ci(x, n_bootstrap=4000, seed=1)
    ref = bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=2)
    assert mean == pytest.approx(x.mean())
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.08)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.08)
    assert lo < mean < hi


def test_bootstrap_ci_is_seeded_and_multicolumn():
    x = np.random.default_rng(0).normal(size=(50, 3))
    a = bootstrap_ci(x, n_bootstrap=200, seed=5)
    b = bootstrap_ci(x, n_bootstrap=200, seed=5)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert a[0].shape == (3,) and bool((a[1] <= a[2]).all())


def test_permutation_p_value_formula():
    null = np.array([0.1, 0.2, 0.3, 0.4])
    assert permutation_p_value(0.35, null) == pytest.approx((1 + 1) / 5)
    assert permutation_p_value(0.5, null) == pytest.approx(1 / 5)  # the +1 correction
    assert permutation_p_value(0.15, null, greater=False) == pytest.approx((1 + 1) / 5)


def test_random_matrix_keeps_shape_and_row_norms():
    m = torch.randn(100, 16) * torch.linspace(0.1, 5, 100)[:, None]
    r = random_matrix_like(m, seed=0)
    assert r.shape == m.shape
    torch.testing.assert_close(r.norm(dim=-1).sort().values, m.norm(dim=-1).sort().values)
    assert not torch.allclose(r, m)
    torch.testing.assert_close(random_matrix_like(m, seed=0), r)  # seeded


def test_random_permutations_are_permutations():
    perms = random_permutations(20, 3, seed=0)
    assert len(perms) == 3
    for p in perms:
        assert torch.equal(p.sort().values, torch.arange(20))
    assert not torch.equal(perms[0], perms[1])
