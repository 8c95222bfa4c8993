"""The one squared-distance kernel (`geomlens.geometry.distances`) that analysis scores, the
distance lens, the ablation metrics and the KNN heads share: against torch.cdist and the direct
formula, chunked against unchunked, and the heads' hand-written backward against autograd."""

import pytest
import torch

from geomlens.geometry import distances as kernel
from geomlens.heads import distance as head_distance

CHUNKS = [None, 1, 7, 50, 64]


def _data(n_positions=9, d_vocab=50, d_model=16, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n_positions, d_model, generator=g, dtype=dtype) * 3
    targets = torch.randn(d_vocab, d_model, generator=g, dtype=dtype)
    h[0] = targets[4]  # an exact hit: d = 0 must come out >= 0, not slightly negative
    return h, targets


def _direct(h, targets):
    """‖h − e‖² by broadcasting over [n_positions, d_vocab, d_model] (no matmul identity)."""
    return (h[:, None, :] - targets[None, :, :]).pow(2).sum(-1)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_sq_distances_match_cdist_and_direct_formula(chunk):
    h, targets = _data()
    sq = kernel.sq_distances(h, targets, vocab_chunk=chunk)
    torch.testing.assert_close(sq, _direct(h, targets), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(sq, torch.cdist(h, targets).pow(2), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(kernel.distances(h, targets, vocab_chunk=chunk),
                               torch.cdist(h, targets), rtol=1e-8, atol=1e-6)
    assert (sq >= 0).all() and sq[0, 4] < 1e-10


@pytest.mark.parametrize("chunk", CHUNKS[1:])
def test_chunked_equals_unchunked(chunk):
    h, targets = _data(dtype=torch.float32)
    dot_full, sq_full = kernel.dot_and_sq_dist(h, targets)
    dot, sq = kernel.dot_and_sq_dist(h, targets, vocab_chunk=chunk)
    torch.testing.assert_close(dot, dot_full, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(sq, sq_full, rtol=1e-6, atol=1e-4)
    blocks = list(kernel.sq_distance_chunks(h, targets, vocab_chunk=chunk))
    assert [start for start, _ in blocks] == list(range(0, 50, chunk))
    torch.testing.assert_close(torch.cat([b for _, b in blocks], dim=1), sq_full,
                               rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("chunk", [None, 7])
def test_dot_products_and_precomputed_norms(chunk):
    h, targets = _data()
    dot, sq = kernel.dot_and_sq_dist(h, targets, targets_sq=kernel.row_sq_norms(targets),
                                     vocab_chunk=chunk)
    torch.testing.assert_close(dot, h @ targets.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sq, _direct(h, targets), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk", [None, 7])
def test_relative_and_shift(chunk):
    """relative: ‖e‖² − 2 h·e (the lens's ranking key, not clamped); shift: added after the clamp."""
    h, targets = _data()
    rel = torch.cat([b for _, b in kernel.sq_distance_chunks(h, targets, vocab_chunk=chunk,
                                                             relative=True)], dim=1)
    want = _direct(h, targets) - h.pow(2).sum(-1, keepdim=True)
    torch.testing.assert_close(rel, want, rtol=1e-10, atol=1e-9)
    assert (rel < 0).any()  # genuinely relative: not clamped at 0
    torch.testing.assert_close(rel.argsort(-1), _direct(h, targets).argsort(-1))
    shifted = kernel.sq_distances(h, targets, vocab_chunk=chunk, shift=1e-6)
    torch.testing.assert_close(shifted, _direct(h, targets).clamp_min(0) + 1e-6,
                               rtol=1e-10, atol=1e-10)
    assert shifted.min() >= 1e-6


def test_block_writes_into_given_outputs():
    h, targets = _data()
    out, dot_out = torch.full((9, 50), float("nan"), dtype=h.dtype), torch.empty(9, 50, dtype=h.dtype)
    h_sq = h.pow(2).sum(-1, keepdim=True)
    got = kernel.sq_distance_block(h, h_sq, targets, kernel.row_sq_norms(targets), out=out,
                                   dot_out=dot_out)
    assert got.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, _direct(h, targets), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dot_out, h @ targets.T, rtol=1e-12, atol=1e-12)


def test_low_precision_targets_are_computed_in_the_dtype_of_h():
    h, targets = _data(dtype=torch.float32)
    sq = kernel.sq_distances(h, targets.bfloat16(), vocab_chunk=7)
    assert sq.dtype == torch.float32
    torch.testing.assert_close(sq, _direct(h, targets.bfloat16().float()), rtol=1e-5, atol=1e-4)


def test_kernel_records_no_gradient():
    h, targets = _data()
    sq = kernel.sq_distances(h.requires_grad_(True), targets.requires_grad_(True))
    assert not sq.requires_grad


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("wrt", ["both", "h", "W_E"])
def test_head_backward_matches_autograd_of_direct_formula(squared, wrt):
    """The heads wrap the kernel in a custom autograd function: its hand-written backward
    against autograd through the broadcast formula (float64), and gradcheck."""
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 4, 6, generator=g, dtype=torch.float64, requires_grad=wrt != "W_E")
    W_E = torch.randn(13, 6, generator=g, dtype=torch.float64, requires_grad=wrt != "h")
    fn = head_distance.sq_distances if squared else head_distance.distances
    sq = (h[:, :, None, :] - W_E[None, None]).pow(2).sum(-1)
    ref = sq if squared else sq.add(head_distance.SQRT_EPS).sqrt()
    inputs = tuple(x for x in (h, W_E) if x.requires_grad)
    weights = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((fn(h, W_E) * weights).sum(), inputs)
    want = torch.autograd.grad((ref * weights).sum(), inputs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(fn(h, W_E), ref.detach(), rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(fn, (h, W_E))


def test_head_distance_keeps_sqrt_eps_at_zero():
    """d = sqrt(max(d², 0) + 1e-6): exactly 1e-3 on an embedding row, finite gradient there."""
    W_E = torch.randn(10, 8, dtype=torch.float64, requires_grad=True)
    h = W_E.detach()[3].clone().reshape(1, 1, 8).requires_grad_(True)
    d = head_distance.distances(h, W_E)
    assert d[0, 0, 3].item() == pytest.approx(1e-3, rel=1e-6)
    d.sum().backward()
    assert torch.isfinite(h.grad).all() and torch.isfinite(W_E.grad).all()
