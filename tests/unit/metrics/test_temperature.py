"""The temperature fit: its JSD against scipy, recovery of a known temperature, and agreement
with a brute-force dense grid."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from geomlens.metrics.temperature import (
    fit_temperature,
    mean_tempered_jsd,
    minimize_log_scale,
    tempered_jsd,
)


def _p(n=12, vocab=300, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g) * scale
    logp = torch.log_softmax(logits, -1)
    return logits, logp.exp(), logp


def test_tempered_jsd_matches_scipy():
    logits, p, logp = _p()
    s = torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 5
    for tau in (0.3, 1.0, 7.0):
        got = tempered_jsd(p, logp, s, torch.tensor(1.0 / tau))
        q = torch.softmax(s.double() / tau, -1)
        ref = [jensenshannon(p[i].double().numpy(), q[i].numpy(), base=math.e) ** 2
               for i in range(len(p))]
        np.testing.assert_allclose(got.numpy(), ref, atol=2e-6)
        mean = mean_tempered_jsd(p, logp, s, tau, block_entries=700)  # 2 rows per block
        assert mean == pytest.approx(float(np.mean(ref)), abs=2e-6)


@pytest.mark.parametrize("c", [0.02, 1.0, 3.0, 250.0])
def test_recovers_the_temperature_of_scaled_logits(c):
    logits, p, logp = _p()
    fit = fit_temperature(p, logp, c * logits)
    assert fit.tau == pytest.approx(c, rel=2e-2)
    assert fit.jsd < 1e-5 and not fit.at_bound


def test_fit_equals_the_minimum_of_a_dense_grid():
    """A toy problem with no exact temperature: s = −‖h − e‖² against p = softmax(h·e)."""
    g = torch.Generator().manual_seed(3)
    h, e = torch.randn(10, 8, generator=g), torch.randn(200, 8, generator=g) * 1.5
    logits = h @ e.T
    logp = torch.log_softmax(logits, -1)
    p = logp.exp()
    s = -torch.cdist(h, e) ** 2
    fit = fit_temperature(p, logp, s, xatol=1e-4)
    grid = np.exp(np.linspace(math.log(1e-3), math.log(1e3), 6001))
    values = np.array([mean_tempered_jsd(p, logp, s, float(t)) for t in grid])
    best = grid[values.argmin()]
    step = math.log(grid[1] / grid[0])
    assert abs(math.log(fit.tau / best)) <= 2 * step
    assert fit.jsd <= values.min() + 1e-7
    assert fit.jsd == pytest.approx(mean_tempered_jsd(p, logp, s, fit.tau), abs=1e-9)


def test_search_extends_the_grid_and_flags_the_bound():
    target = 1e4
    far = minimize_log_scale(lambda t: (math.log(t) - math.log(target)) ** 2, 1.0)
    assert far.tau == pytest.approx(target, rel=1e-2) and not far.at_bound
    edge = minimize_log_scale(lambda t: 1.0 / t, 1.0)  # decreasing: the minimum is at infinity
    assert edge.at_bound and edge.tau == pytest.approx(1e6, rel=1e-2)


def test_constant_score_is_uniform_at_any_temperature():
    logits, p, logp = _p(n=4, vocab=50)
    fit = fit_temperature(p, logp, torch.zeros_like(p))
    uniform = torch.full_like(p, 1 / 50)
    ref = np.mean([jensenshannon(p[i].numpy(), uniform[i].numpy(), base=math.e) ** 2
                   for i in range(4)])
    assert fit.jsd == pytest.approx(ref, abs=1e-6)
