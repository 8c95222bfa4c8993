"""NDCG / top-k against sklearn and direct formulas, plus their properties."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from geomlens.metrics.ranking import (
    ideal_dcg,
    ndcg_at_k,
    ndcg_topk,
    overlap_at_k,
    tail_dcg_bounds,
    top1_agreement,
    topk_overlap,
)


def _probs(n, vocab, temp=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, vocab, generator=g) * temp, dim=-1)


@pytest.mark.parametrize("k", [1, 5, 10, None])
def test_ndcg_linear_gain_matches_sklearn(k):
    p = _probs(6, 40)
    scores = torch.randn(6, 40)
    ours = ndcg_at_k(scores, p, k=k, gain="linear").numpy()
    ref = [ndcg_score(p[i : i + 1].numpy(), scores[i : i + 1].numpy(), k=k) for i in range(6)]
    np.testing.assert_allclose(ours, ref, rtol=1e-5)


def test_ndcg_exp2_gain_matches_direct_formula():
    p = _probs(3, 30)
    scores = torch.randn(3, 30)
    for i in range(3):
        order = np.argsort(-scores[i].numpy())
        ideal = np.argsort(-p[i].numpy())
        disc = 1 / np.log2(np.arange(2, 32))
        gain = 2 ** p[i].numpy().astype(np.float64) - 1
        expected = (gain[order] * disc).sum() / (gain[ideal] * disc).sum()
        assert ndcg_at_k(scores[i], p[i], gain="exp2").item() == pytest.approx(expected, rel=1e-5)


def test_ndcg_properties():
    p = _probs(8, 64)
    assert torch.allclose(ndcg_at_k(p, p), torch.ones(8))  # identical ranking
    assert torch.allclose(ndcg_at_k(p.log() * 3 + 1, p), torch.ones(8))  # monotone transform
    for k in (1, 10, None):
        v = ndcg_at_k(torch.randn(8, 64), p, k=k)
        assert bool(((v >= 0) & (v <= 1 + 1e-6)).all())
    worst = ndcg_at_k(-p, p)  # reversed ranking is worse than a random one on average
    assert float(worst.mean()) < float(ndcg_at_k(torch.randn(8, 64), p).mean())


@pytest.mark.parametrize("temp", [0.5, 3.0])
@pytest.mark.parametrize("topk", [100, 256])
def test_topk_ndcg_within_stated_bound(temp, topk):
    vocab = 3000
    p = _probs(16, vocab, temp=temp, seed=1)
    scores = p.log() + torch.randn(16, vocab) * 2.0  # noisy version of p
    ideal = ideal_dcg(p, topk=topk, gain="exp2")
    res = ndcg_topk(scores, ideal, ks=[1, 10, 100, None])
    for k in (1, 10, 100):
        torch.testing.assert_close(res.values[k], ndcg_at_k(scores, p, k=k), rtol=1e-4, atol=1e-6)
    exact = ndcg_at_k(scores, p, k=None)
    err = (res.values[None] - exact).abs()
    assert bool((err <= res.full_error_bound + 1e-5).all())
    assert float(res.full_error_bound.max()) < 0.05  # the bucketed bound is useful


def test_topk_ndcg_exact_when_k_covers_vocab():
    p = _probs(4, 50)
    scores = torch.randn(4, 50)
    res = ndcg_topk(scores, ideal_dcg(p, topk=50, gain="linear"), ks=[None])
    torch.testing.assert_close(res.values[None], ndcg_at_k(scores, p, gain="linear"))
    assert float(res.full_error_bound.max()) == 0.0


def test_tail_bounds_bracket_the_exact_tail():
    vocab, k = 2000, 64
    values = torch.randn(5, vocab)
    gains = torch.rand(5, vocab)
    top = values.topk(k, dim=-1).indices
    lo, hi = tail_dcg_bounds(values, gains, top)
    order = values.argsort(dim=-1, descending=True)
    disc = 1 / torch.log2(torch.arange(2, vocab + 2, dtype=torch.float64))
    exact = (gains.double().gather(1, order)[:, k:] * disc[k:]).sum(-1)
    assert bool((lo.double() <= exact + 1e-4).all() and (exact <= hi.double() + 1e-4).all())
    simple_width = gains.sum(-1) * (1 / math.log2(k + 2) - 1 / math.log2(vocab + 1))
    assert bool(((hi - lo) < simple_width).all())  # tighter than the one-bucket bracket


def test_top1_and_top10_overlap_direct():
    p = _probs(5, 30)
    scores = torch.randn(5, 30)
    for i in range(5):
        a = set(np.argsort(-scores[i].numpy())[:10].tolist())
        b = set(np.argsort(-p[i].numpy())[:10].tolist())
        assert topk_overlap(scores[i : i + 1], p[i : i + 1], k=10).item() == pytest.approx(len(a & b) / 10)
        same = int(scores[i].argmax() == p[i].argmax())
        assert top1_agreement(scores[i], p[i]).item() == same
    assert torch.equal(topk_overlap(p, p), torch.ones(5))
    idx = torch.arange(10)[None]
    assert overlap_at_k(idx, idx.flip(-1)).item() == 1.0
