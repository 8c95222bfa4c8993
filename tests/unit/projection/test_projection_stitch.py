"""Translating a classifier through the embedding matrices: identities and a planted rotation."""

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from geomlens.projection.stitch import (
    LinearClassifier,
    fit_classifier,
    permuted_accuracies,
    segment_features,
    stitch_rows,
    translate,
    translation,
    wilson,
)
from geomlens.projection.stitch_command import StitchConfig


def _blobs(n=200, d=6, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d)) * 3
    y = np.arange(n) % classes
    return centres[y] + rng.normal(size=(n, d)), y


def test_identical_embeddings_leave_the_classifier_unchanged():
    E = torch.randn(40, 6, dtype=torch.float64)
    clf = LinearClassifier(W=np.random.default_rng(0).normal(size=(5, 6)), b=np.arange(5.0))
    moved = translate(clf, translation(E, E))
    np.testing.assert_allclose(moved.W, clf.W, atol=1e-10)
    np.testing.assert_array_equal(moved.b, clf.b)


def test_rotated_model_gets_identical_predictions():
    # model B = model A with its residual stream rotated: E_B = E_A R, x_B = R^T x_A
    X, y = _blobs()
    E_A = torch.randn(50, 6, dtype=torch.float64)
    R, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    clf = fit_classifier(X, y)
    M = translation(E_A, E_A @ R)
    np.testing.assert_allclose(M.numpy(), R.numpy(), atol=1e-10)
    X_B = X @ R.numpy()
    moved = translate(clf, M)
    np.testing.assert_array_equal(moved.predict(X_B), clf.predict(X))
    assert clf.accuracy(X, y) > 0.9
    # permuting B's token rows destroys the map: the null is near chance
    null = permuted_accuracies(clf, E_A, E_A @ R, X_B, y, n_permutations=20, seed=0)
    assert null.mean() < 0.6 and len(null) == 20


def test_fit_classifier_matches_sklearn_on_raw_features():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _blobs(seed=1)
    ours = fit_classifier(X, y)
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=0)).fit(X, y)
    np.testing.assert_allclose(X @ ours.W.T + ours.b, ref.decision_function(X), rtol=1e-5, atol=1e-5)


def test_wilson_interval_matches_scipy():
    lo, hi = wilson(0.62, 150)
    ref = binomtest(93, 150).proportion_ci(method="wilson")
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)


def test_stitch_rows_p_against_direct_count():
    X, y = _blobs(n=100)
    E = torch.randn(30, 6, dtype=torch.float64)
    rows = stitch_rows({"a": X, "b": X}, {"a": E, "b": E}, y, split_seeds=[0], n_permutations=49,
                       both_directions=False)
    assert len(rows) == 1
    r = rows[0]
    assert r["acc_translated"] == r["acc_a"] == r["acc_ceiling"]  # the same model twice
    # direct count with the same permutations
    from sklearn.model_selection import train_test_split

    tr, te = train_test_split(np.arange(100), test_size=0.5, stratify=y, random_state=0)
    perm = permuted_accuracies(fit_classifier(X[tr], y[tr], seed=0), E, E, X[te], y[te],
                               n_permutations=49, seed=0)
    assert r["p"] == pytest.approx((1 + np.sum(perm >= r["acc_translated"])) / 50)


@torch.no_grad()
def test_segment_features_mask_padding(gqa_model):
    seqs = [torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6])]
    F = segment_features(gqa_model, seqs, batch_size=2)
    alone = gqa_model.ln_final(gqa_model(seqs[1][None], stop_at_layer=2))[0].mean(0)
    np.testing.assert_allclose(F[1], alone.double().numpy(), atol=1e-5)


def test_permuted_accuracies_equal_full_translation_per_permutation():
    X, y = _blobs(n=60)
    E_A, E_B = torch.randn(25, 6, dtype=torch.float64), torch.randn(25, 4, dtype=torch.float64)
    clf = fit_classifier(X, y)
    X_b = np.random.default_rng(2).normal(size=(60, 4))
    got = permuted_accuracies(clf, E_A, E_B, X_b, y, n_permutations=7, seed=5)
    gen = torch.Generator().manual_seed(5)
    ref = [translate(clf, translation(E_A, E_B[torch.randperm(25, generator=gen)])).accuracy(X_b, y)
           for _ in range(7)]
    np.testing.assert_allclose(got, ref)


def test_stitch_config_rejects_bad_input():
    from geomlens.errors import InputError

    with pytest.raises(InputError, match="--model-b is required"):
        StitchConfig()
    for bad in (dict(test_fraction=1.5), dict(through="W_X"), dict(n_permutations=-1),
                dict(split_seeds=[]), dict(n_segments=2)):
        with pytest.raises(InputError):
            StitchConfig(model_b="smollm2-135m", **bad)
