"""Recall / Jaccard of token sets and the paired-vs-shuffled test against direct formulas."""

import itertools

import numpy as np
import pytest
import torch

from geomlens.projection.overlap import overlap_counts, overlap_scores, paired_test


def _direct(a_rows, b_rows, metric):
    out = np.zeros((len(a_rows), len(b_rows)))
    for j, a in enumerate(a_rows):
        for i, b in enumerate(b_rows):
            A, B = {t for t in np.ravel(a) if t >= 0}, {t for t in np.ravel(b) if t >= 0}
            out[j, i] = len(A & B) / len(B) if metric == "recall" else len(A & B) / len(A | B)
    return out


def test_jaccard_of_identical_sets_is_one_and_disjoint_is_zero():
    sets = torch.tensor([[1, 2, 3], [4, 5, 6]])
    S = overlap_scores(sets, sets, 10, "jaccard")
    assert S[0, 0] == 1.0 and S[1, 1] == 1.0
    assert S[0, 1] == 0.0 and S[1, 0] == 0.0


def test_recall_hand_computed_case():
    # parameter side: union of two neurons' top-3 tokens = {1, 2, 3, 7, 8}; hidden side top-2 {3, 9}
    A = torch.tensor([[[1, 2, 3], [7, 8, 1]]])
    B = torch.tensor([[3, 9]])
    assert overlap_scores(A, B, 10, "recall")[0, 0] == pytest.approx(0.5)
    inter, size_a, size_b = overlap_counts(A, B, 10)
    assert inter[0, 0] == 1 and size_a[0] == 5 and size_b[0] == 2


@pytest.mark.parametrize("metric", ["recall", "jaccard"])
def test_scores_match_python_sets(metric):
    g = torch.Generator().manual_seed(0)
    A = torch.randint(0, 30, (7, 2, 5), generator=g)
    B = torch.randint(0, 30, (6, 4), generator=g)
    B[0, 3] = -1  # padding is ignored
    np.testing.assert_allclose(overlap_scores(A, B, 30, metric), _direct(A.numpy(), B.numpy(), metric))


def test_paired_test_against_direct_count():
    rng = np.random.default_rng(1)
    S = rng.random((5, 5)) + 2 * np.eye(5)
    res = paired_test(S, n_permutations=999, seed=3)
    # the same permutations, drawn again, counted directly
    gen = np.random.default_rng(3)
    perms = np.concatenate([gen.permuted(np.tile(np.arange(5), (m, 1)), axis=1) for m in (512, 487)])
    assert all(sorted(p) == list(range(5)) for p in perms)
    null = np.array([np.mean([S[p[i], i] for i in range(5)]) for p in perms])
    assert res.value == pytest.approx(np.trace(S) / 5)
    assert res.p == pytest.approx((1 + np.sum(null >= np.trace(S) / 5)) / 1000)
    assert res.baseline == pytest.approx(null.mean())
    # the exact null mean over all 120 permutations is the mean of all entries
    exact = np.mean([np.mean(S[list(p), range(5)]) for p in itertools.permutations(range(5))])
    assert exact == pytest.approx(S.mean())
    assert abs(res.baseline - exact) < 0.05
    assert res.ci_low <= res.value <= res.ci_high


def test_paired_test_null_when_no_pairing_signal():
    S = np.ones((6, 6))
    res = paired_test(S, n_permutations=99)
    assert res.p == 1.0 and res.value == res.baseline == 1.0
