"""Exact top-k without a vocab x vocab matrix: against dense products."""

import pytest
import torch

from geomlens.projection.topk import factored_topk, vector_topk


def _dense_topk(M, k, largest):
    v, flat = M.reshape(-1).topk(k, largest=largest)
    return v, flat // M.shape[1], flat % M.shape[1]


@pytest.mark.parametrize("shape", [(300, 200, 8), (2000, 1500, 16), (40, 30, 64), (600, 500, 40)])
@pytest.mark.parametrize("n_partial_dims", [2, 32])
def test_factored_topk_equals_dense(shape, n_partial_dims, one_thread):
    n, m, r = shape
    g = torch.Generator().manual_seed(n + r)
    # heterogeneous row/column norms, as embeddings have
    A = torch.randn(n, r, generator=g) * torch.rand(n, 1, generator=g)
    B = torch.randn(r, m, generator=g) * torch.rand(1, m, generator=g)
    res = factored_topk(A, B, 20, n_partial_dims=n_partial_dims, max_block=5000)
    M = A @ B
    for vals, rows, cols, largest in ((res.top_values, res.top_rows, res.top_cols, True),
                                      (res.bottom_values, res.bottom_rows, res.bottom_cols, False)):
        dv, dr, dc = _dense_topk(M, 20, largest)
        torch.testing.assert_close(vals, dv)
        assert torch.equal(rows, dr) and torch.equal(cols, dc)
        torch.testing.assert_close(vals, M[rows, cols])  # values are the product's own entries
    assert 0 < res.stats.fraction_evaluated <= 1


def test_factored_topk_prunes_a_dominant_block(one_thread):
    """A few huge rows and columns carry the top entries: most of the product is skipped."""
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(4000, 8, generator=g), torch.randn(8, 3000, generator=g)
    A[:5] *= 50
    B[:, :5] *= 50
    res = factored_topk(A, B, 10, max_block=20000)
    dv, _, _ = _dense_topk(A @ B, 10, True)
    torch.testing.assert_close(res.top_values, dv)
    assert res.stats.fraction_evaluated < 0.2


def test_factored_topk_k_larger_than_matrix():
    A, B = torch.randn(3, 2), torch.randn(2, 4)
    res = factored_topk(A, B, 50)
    assert len(res.top_values) == 12
    torch.testing.assert_close(res.top_values, (A @ B).reshape(-1).sort(descending=True).values)


def test_vector_topk_equals_dense():
    X, T = torch.randn(70, 16), torch.randn(300, 16)
    for largest in (True, False):
        v, ix = vector_topk(X, T, 7, largest=largest, chunk_size=16)
        dv, dix = (X @ T.T).topk(7, dim=-1, largest=largest)
        torch.testing.assert_close(v, dv)
        assert torch.equal(ix, dix)
