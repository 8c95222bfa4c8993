"""The score registry: every score against its direct formula; duplicates and unknown names."""


import pytest
import torch

from geomlens.errors import InputError
from geomlens.geometry.scores import (
    SCORES,
    compute_scores,
    get_score,
    register_score,
    score_distribution,
    score_parts,
)


def test_scores_against_direct_formulas():
    h, e = torch.randn(4, 8), torch.randn(30, 8)
    parts = score_parts(h, e, eps=1e-6)
    s = compute_scores(parts)
    d = torch.cdist(h.double(), e.double()).float()
    torch.testing.assert_close(s["neg_dist"], -d, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s["neg_sq_dist"], -d**2, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(s["inv_dist"], 1 / (d + 1e-6), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s["cosine"], torch.nn.functional.cosine_similarity(h[:, None], e[None], dim=-1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(s["dot"], h @ e.T)
    q = score_distribution(parts, "softmax_inv_dist")
    torch.testing.assert_close(q, torch.softmax(1 / (d + 1e-6), -1), rtol=1e-4, atol=1e-6)
    q1 = score_distribution(parts, "inv_dist")
    inv = 1 / (d + 1e-6)
    torch.testing.assert_close(q1, inv / inv.sum(-1, keepdim=True), rtol=1e-4, atol=1e-6)
    assert set(SCORES.names()) == {"inv_dist", "softmax_inv_dist", "neg_dist", "neg_sq_dist", "cosine", "dot"}


def test_registry_rejects_duplicates_and_unknown():
    with pytest.raises(ValueError):
        register_score("dot", lambda parts: parts.dot, help="duplicate")
    with pytest.raises(InputError, match="unknown score 'nope'"):
        get_score("nope")
