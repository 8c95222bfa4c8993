"""Distance identity vs torch.cdist; d = 0 stays finite."""

import pytest
import torch

from geomlens.geometry.distances import distances, dot_and_sq_dist, sq_distances
from geomlens.geometry.scores import (
    compute_scores,
    score_parts,
)


@pytest.mark.parametrize("chunk", [None, 7])
def test_matmul_identity_matches_cdist(chunk):
    h, e = torch.randn(9, 16) * 3, torch.randn(50, 16)
    torch.testing.assert_close(distances(h, e, vocab_chunk=chunk), torch.cdist(h, e), rtol=1e-4, atol=1e-4)
    dot, sq = dot_and_sq_dist(h, e, vocab_chunk=chunk)
    torch.testing.assert_close(dot, h @ e.T)
    assert bool((sq >= 0).all())


def test_distance_zero_is_clamped_and_inv_dist_finite():
    e = torch.randn(20, 8) * 10
    h = e[:3].clone()  # exactly on embedding rows
    sq = sq_distances(h, e)
    assert bool((sq >= 0).all())
    scores = compute_scores(score_parts(h, e))
    for name, s in scores.items():
        assert bool(torch.isfinite(s).all()), name
    assert bool((scores["inv_dist"].argmax(-1) == torch.arange(3)).all())
