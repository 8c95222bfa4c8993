"""JSD / KL against scipy and torch.distributions, plus symmetry and bounds."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from torch.distributions import Categorical, kl_divergence

from geomlens.metrics.divergence import (
    js_divergence,
    js_divergence_and_lse,
    js_divergence_fast,
    js_divergence_from_logprobs,
)
from geomlens.metrics.divergence import kl_divergence as our_kl


def _logits(n, vocab, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, vocab, generator=g) * scale


def test_jsd_matches_scipy_and_torch_distributions():
    a, b = _logits(5, 100), _logits(5, 100, seed=1)
    ours = js_divergence(a, b)
    p, q = torch.softmax(a.double(), -1), torch.softmax(b.double(), -1)
    ref_scipy = jensenshannon(p.numpy(), q.numpy(), axis=-1) ** 2  # sqrt(JSD), base e
    np.testing.assert_allclose(ours.numpy(), ref_scipy, rtol=1e-4)
    m = Categorical(probs=(p + q) / 2)
    ref_torch = 0.5 * kl_divergence(Categorical(probs=p), m) + 0.5 * kl_divergence(Categorical(probs=q), m)
    np.testing.assert_allclose(ours.numpy(), ref_torch.numpy(), rtol=1e-4)
    bits = js_divergence(a, b, base="bits")
    np.testing.assert_allclose(bits.numpy(), jensenshannon(p.numpy(), q.numpy(), axis=-1, base=2) ** 2, rtol=1e-4)


def test_kl_matches_torch_distributions():
    a, b = _logits(4, 50), _logits(4, 50, seed=2)
    ref = kl_divergence(Categorical(logits=a), Categorical(logits=b))
    torch.testing.assert_close(our_kl(a, b), ref, rtol=1e-4, atol=1e-6)


def test_jsd_properties():
    a, b = _logits(6, 80, scale=5.0), _logits(6, 80, scale=5.0, seed=3)
    torch.testing.assert_close(js_divergence(a, b), js_divergence(b, a))  # symmetric
    assert torch.allclose(js_divergence(a, a), torch.zeros(6), atol=1e-6)  # 0 for identical
    v = js_divergence(a, b)
    assert bool(((v >= 0) & (v <= math.log(2) + 1e-6)).all())
    disjoint_p = torch.tensor([[0.0, -1e9]]), torch.tensor([[-1e9, 0.0]])  # near-disjoint support
    assert js_divergence(*disjoint_p).item() == pytest.approx(math.log(2), abs=1e-5)
    assert js_divergence(*disjoint_p, base="bits").item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("scale", [0.5, 3.0, 20.0])
def test_fast_jsd_matches_exact(scale):
    a, b = _logits(8, 5000, scale=scale), _logits(8, 5000, scale=scale, seed=4)
    logp = torch.log_softmax(a, -1)
    p = logp.exp()
    fast = js_divergence_fast(p, logp, b)
    exact = js_divergence_from_logprobs(logp.double(), torch.log_softmax(b.double(), -1))
    torch.testing.assert_close(fast.double(), exact, atol=2e-6, rtol=1e-5)
    same = js_divergence_fast(p, logp, a)
    assert float(same.max()) < 2e-6


def test_xlogx_is_xlogy_of_x_and_x():
    from geomlens.metrics.divergence import xlogx

    x = torch.tensor([0.0, 1e-45, 1e-30, 0.5, 1.0, 3.0, float("inf"), float("nan")])
    torch.testing.assert_close(xlogx(x), torch.xlogy(x, x), equal_nan=True, rtol=0, atol=0)


def test_jsd_and_lse_gives_the_fast_jsd_and_torch_logsumexp():
    a, b = _logits(8, 5000, scale=3.0), _logits(8, 5000, scale=3.0, seed=4)
    logp = torch.log_softmax(a, -1)
    jsd, lse = js_divergence_and_lse(logp.exp(), logp, b)
    assert torch.equal(jsd, js_divergence_fast(logp.exp(), logp, b))
    torch.testing.assert_close(lse, torch.logsumexp(b, -1, keepdim=True), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("scale", [0.5, 3.0, 20.0])
def test_in_place_jsd_equals_jsd_terms_bit_for_bit(scale):
    """The in-place arithmetic of `js_divergence_and_lse` rounds entry for entry like
    `jsd_terms` (the definition the compiled passes use), underflowed q included."""
    from geomlens.metrics.divergence import LN2, jsd_terms

    a, b = _logits(6, 40000, scale=scale), _logits(6, 40000, scale=scale, seed=5)
    b[:, :50] = -1e30  # q = 0 there
    logp = torch.log_softmax(a, -1)
    p = logp.exp()
    z = b - b.amax(-1, keepdim=True)
    norm = z.exp().sum(-1, keepdim=True)
    q, logq = z.exp() / norm, z - norm.log()
    expected = jsd_terms(p, p * logp, q, logq).sum(-1).clamp(0.0, LN2)
    assert torch.equal(js_divergence_and_lse(p, logp, b)[0], expected)
