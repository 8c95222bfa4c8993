"""Top-K selection and tail buckets: ties by index, the native code against torch (bit for bit),
and the bracket."""

import pytest
import torch

from geomlens import native
from geomlens.metrics import selection
from geomlens.metrics.ranking import discounts, tail_dcg_bounds
from geomlens.metrics.selection import bucket_bounds, rank_summary

needs_native = pytest.mark.skipif(native.library("rank") is None, reason="no native code")


def _rows(n=7, d_vocab=3000, seed=0, heavy=False):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n, d_vocab, generator=g) * 3
    if heavy:  # probabilities: a few large, most block maxima crowded near 0 (one histogram bin)
        values = torch.softmax(values * 4, dim=-1)
    values[0, :50] = values[0, 7]  # ties, some of them inside the top K
    values[1] = 0.5  # a constant row: every token in bucket 0
    gains = torch.rand(n, d_vocab, generator=g)
    return values, gains


@needs_native
@pytest.mark.parametrize("heavy", [False, True])
@pytest.mark.parametrize("k", [1, 10, 256, 3000])
def test_native_matches_torch(k, heavy):
    """Every field equal bit for bit, ties at the K-th value included (3001: a partial last
    block)."""
    values, gains = _rows(d_vocab=3000 if k == 3000 else 3001, heavy=heavy)
    nat = rank_summary(values, gains, k=k)
    ref = selection._torch(values, gains, k, selection.N_BUCKETS)
    for field in ("top_values", "top_indices", "low", "scale", "count", "tail_gains"):
        assert torch.equal(getattr(nat, field), getattr(ref, field)), field


@pytest.mark.parametrize("use_native", [False, True])
@pytest.mark.parametrize("k", [1, 10, 45, 3000])
def test_top_k_breaks_ties_by_index(k, use_native, monkeypatch):
    """Larger value first, then the smaller index: the order of a stable descending sort, on
    the torch path and the native one (skipped where there is none)."""
    if use_native and native.library("rank") is None:
        pytest.skip("no native code")
    if not use_native:
        monkeypatch.setattr(native, "library", lambda name: None)
    values, _ = _rows(d_vocab=3000)
    values[2] = torch.round(values[2])  # many ties at every value
    v, i = selection.top_k(values, k)
    want = values.argsort(dim=-1, descending=True, stable=True)[:, :k]
    assert torch.equal(i, want)
    assert torch.equal(v, values.gather(1, want))


@needs_native
@pytest.mark.parametrize("heavy", [False, True])
@pytest.mark.parametrize("k", [1, 10, 256, 3001])
def test_native_top_k_equals_rank_summary_top(k, heavy):
    """The top-K-only pass is rank_summary's selection: the same values and indices."""
    values, gains = _rows(d_vocab=3001, heavy=heavy)
    v, i = selection.top_k(values, k)
    s = rank_summary(values, gains, k=k)
    assert torch.equal(v, s.top_values) and torch.equal(i, s.top_indices)


def test_tail_gains_are_float64_sums():
    """A gain of 1 then 1,000 gains of 1e-8 in one bucket: float32 sums stay at 1 (each 1e-8
    is below half its spacing there); float64 sums keep them, on both paths."""
    values, gains = torch.zeros(1, 1002), torch.full((1, 1002), 1e-8)
    values[0, 0], gains[0, 1] = 1.0, 1.0  # index 0: the top 1; the rest: bucket 0
    want = (gains[0, 1:].double().sum()).float()
    assert want > 1.0
    for s in (selection._torch(values, gains, 1, 2), rank_summary(values, gains, k=1, n_buckets=2)):
        assert s.tail_gains[0, 0] == want


def test_bracket_contains_the_exact_tail_dcg():
    values, gains = _rows(seed=3)
    k = 20
    s = rank_summary(values, gains, k=k)
    lo, hi = bucket_bounds(s.count, s.tail_gains, k)
    order = values.argsort(dim=-1, descending=True, stable=True)
    exact = (gains.gather(1, order)[:, k:] * discounts(values.shape[1])[k:]).sum(-1)
    assert bool((lo <= exact + 1e-4).all()) and bool((exact <= hi + 1e-4).all())
    lo2, hi2 = tail_dcg_bounds(values, gains, s.top_indices)
    torch.testing.assert_close(lo, lo2, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(hi, hi2, rtol=1e-4, atol=1e-4)


def test_bucket_codes_are_the_bucket_indices_as_bytes():
    values, gains = _rows(d_vocab=3001)
    s = selection._torch(values, gains, 10, selection.N_BUCKETS)
    values[2, :4] = torch.tensor([float("inf"), -float("inf"), 1e30, -1e30])  # clamped to 63 / 0
    codes = selection.bucket_codes(values, s.low, s.scale)
    assert codes.dtype == torch.uint8
    want = selection.bucket_index(values, s.low, s.scale)
    assert torch.equal(codes.long(), want)
    assert int(codes.max()) == selection.N_BUCKETS - 1 and int(codes.min()) == 0


@pytest.mark.parametrize("use_native", [True, False])
def test_count_above_is_the_rank_by_a_direct_count(use_native, monkeypatch):
    """count_above[r, t] = #{v: values[r, v] > thresholds[r, t]} (ties share the better rank),
    native and torch the same integers; a threshold taken from the row gives that token's
    0-based rank."""
    if use_native and native.library("rank") is None:
        pytest.skip("no native code")
    if not use_native:
        monkeypatch.setattr(native, "library", lambda name: None)
    values, _ = _rows(d_vocab=3001)
    cols = torch.tensor([[7, 0], [3, 5], [0, 2999], [1, 1], [2, 4], [5, 6], [9, 8]])
    thresholds = values.gather(1, cols)
    counts = selection.count_above(values, thresholds)
    lower = selection.count_above(values, thresholds, below=True)
    for r in range(values.shape[0]):
        for t in range(2):
            assert counts[r, t] == sum(float(v) > float(thresholds[r, t]) for v in values[r])
            assert lower[r, t] == sum(float(v) < float(thresholds[r, t]) for v in values[r])
    assert counts[0, 0] == counts[0, 1]  # tied values share a rank
    assert counts[1].tolist() == [0, 0]  # a constant row: nothing above


def test_count_above_native_equals_torch_on_large_rows():
    if native.library("rank") is None:
        pytest.skip("no native code")
    g = torch.Generator().manual_seed(1)
    values = torch.randn(33, 49152, generator=g)
    thresholds = torch.randn(33, 3, generator=g)
    for below, op in ((False, torch.gt), (True, torch.lt)):
        torch_counts = torch.stack([op(values, thresholds[:, t:t + 1]).sum(-1) for t in range(3)], -1)
        assert torch.equal(selection.count_above(values, thresholds, below=below), torch_counts)
