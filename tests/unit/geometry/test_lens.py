"""Distance lens and logit lens: checked against scipy/torch references and the model itself."""

import numpy as np
import pytest
import torch
from helpers import build_model
from scipy.spatial.distance import cdist
from scipy.stats import rankdata

from geomlens.geometry.lens import (
    distance_ranks,
    lens_ranks,
    ln_final_normalized,
    logit_ranks,
    sq_distance_chunks,
)
from geomlens.geometry.trajectory import trajectory_stats


def _min_ranks(values: np.ndarray, targets: np.ndarray, *, descending: bool) -> np.ndarray:
    """Reference: rank = number of entries strictly better (scipy 'min' ranking, 0-based)."""
    out = np.empty(targets.shape, dtype=np.int64)
    for i, row in enumerate(values):
        r = rankdata(-row if descending else row, method="min") - 1
        out[i] = r[targets[i]]
    return out


@pytest.mark.parametrize("chunk_size", [1, 7, 50, 8192])
def test_distance_ranks_match_scipy(chunk_size):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(13, 6, generator=g)
    W_E = torch.randn(50, 6, generator=g)
    targets = torch.randint(0, 50, (13, 3), generator=g)
    ranks, near_d, near_t = distance_ranks(h, W_E, targets, chunk_size=chunk_size)
    d = cdist(h.numpy().astype(np.float64), W_E.numpy().astype(np.float64))
    np.testing.assert_array_equal(ranks.numpy(), _min_ranks(d, targets.numpy(), descending=False))
    np.testing.assert_array_equal(near_t.numpy(), d.argmin(1))
    np.testing.assert_allclose(near_d.numpy(), d.min(1), rtol=1e-4, atol=1e-4)
    # properties: ranks are in [0, vocab), the nearest token has rank 0
    assert ranks.min() >= 0 and ranks.max() < 50
    r0, _, _ = distance_ranks(h, W_E, near_t[:, None], chunk_size=chunk_size)
    assert (r0 == 0).all()


def test_sq_distance_chunks_cover_vocab_and_are_nonnegative():
    g = torch.Generator().manual_seed(2)
    h, W_E = torch.randn(4, 5, generator=g), torch.randn(23, 5, generator=g)
    h[0] = W_E[3]  # an exact hit: round-off must not make it negative
    parts = list(sq_distance_chunks(h, W_E, chunk_size=10))
    assert [s for s, _ in parts] == [0, 10, 20]
    full = torch.cat([d for _, d in parts], dim=1)
    assert (full >= 0).all()
    torch.testing.assert_close(full, torch.cdist(h, W_E).pow(2), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("normalization_type", ["RMS", "LN"])
def test_ln_final_normalized_matches_hook_and_excludes_gain(normalization_type):
    model = build_model(normalization_type=normalization_type, final_rms=normalization_type == "RMS")
    assert type(model.ln_final).__name__ == ("RMSNorm" if normalization_type == "RMS" else "LayerNorm")
    with torch.no_grad():
        model.ln_final.w.copy_(torch.rand(model.cfg.d_model) + 0.5)  # gain != 1
    tokens = torch.randint(0, 50, (2, 6))
    _, cache = model.run_with_cache(tokens)
    resid = cache["blocks.1.hook_resid_post"]
    torch.testing.assert_close(ln_final_normalized(model, resid), cache["ln_final.hook_normalized"])
    x = resid - resid.mean(-1, keepdim=True) if normalization_type == "LN" else resid
    ref = x / (x.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
    torch.testing.assert_close(ln_final_normalized(model, resid), ref)


def test_logit_lens_at_last_layer_reproduces_model_logits():
    model = build_model()
    with torch.no_grad():
        model.ln_final.w.copy_(torch.rand(model.cfg.d_model) + 0.5)
    tokens = torch.randint(0, 50, (3, 8))
    logits, cache = model.run_with_cache(tokens)
    resid = cache["blocks.1.hook_resid_post"].reshape(-1, model.cfg.d_model)
    flat = logits.reshape(-1, 50).detach().numpy().astype(np.float64)
    targets = torch.randint(0, 50, (resid.shape[0], 2))
    ranks, top1 = logit_ranks(model, resid, targets, chunk_size=9)
    np.testing.assert_array_equal(ranks.numpy(), _min_ranks(flat, targets.numpy(), descending=True))
    np.testing.assert_array_equal(top1.numpy(), flat.argmax(1))


def test_trajectory_stats_last_layer_lenses_match_direct_ranks():
    """Distance lens (normalize=True) at the last layer == ranks of distances from the
    model's own ln_final.hook_normalized; logit lens at the last layer == model logits' ranks."""
    model = build_model()
    with torch.no_grad():
        model.ln_final.w.copy_(torch.rand(model.cfg.d_model) + 0.5)
    tokens = torch.randint(0, 50, (2, 7))
    lengths = torch.tensor([7, 4])
    df = trajectory_stats(model, tokens, lengths, normalize_lens=True, chunk_size=16)
    logits, cache = model.run_with_cache(tokens)
    last = df[df.layer == model.cfg.n_layers - 1].sort_values(["batch_idx", "pos"])
    b, p = last.batch_idx.to_numpy().copy(), last.pos.to_numpy().copy()
    h = cache["ln_final.hook_normalized"][b, p].numpy().astype(np.float64)
    lg = logits[b, p].detach().numpy().astype(np.float64)
    top1 = lg.argmax(1)
    d = cdist(h, model.W_E.detach().numpy().astype(np.float64))
    np.testing.assert_array_equal(last.dlens_rank_top1.to_numpy(), _min_ranks(d, top1[:, None], descending=False)[:, 0])
    np.testing.assert_array_equal(last.nearest_token_id.to_numpy(), d.argmin(1))
    np.testing.assert_allclose(last.nearest_dist.to_numpy(), d.min(1), rtol=1e-4)
    assert (last.logit_rank_top1 == 0).all()
    has_next = p + 1 < lengths.numpy()[b]
    nxt = tokens.numpy()[b[has_next], p[has_next] + 1]
    ref_next = _min_ranks(lg[has_next], nxt[:, None], descending=True)[:, 0]
    np.testing.assert_array_equal(last.logit_rank_next.to_numpy()[has_next], ref_next)
    np.testing.assert_array_equal(last.dlens_rank_next.to_numpy()[has_next],
                                  _min_ranks(d[has_next], nxt[:, None], descending=False)[:, 0])
    assert last.logit_rank_next[~has_next].isna().all() and last.dlens_rank_next[~has_next].isna().all()


def test_normalize_changes_only_the_distance_lens():
    model = build_model()
    tokens = torch.randint(0, 50, (2, 5))
    raw = trajectory_stats(model, tokens)
    norm = trajectory_stats(model, tokens, normalize_lens=True)
    for col in ("step_norm", "attn_share", "inertia_cos", "logit_rank_top1", "logit_rank_next"):
        np.testing.assert_array_equal(raw[col].to_numpy(), norm[col].to_numpy())
    # raw residual norms differ from the normalised ones, so nearest distances differ
    assert not np.allclose(raw.nearest_dist.to_numpy(), norm.nearest_dist.to_numpy())


def test_lens_ranks_keys_and_shapes():
    model = build_model()
    resid = torch.randn(5, model.cfg.d_model)
    out = lens_ranks(model, resid, torch.zeros(5, 2, dtype=torch.long), chunk_size=8)
    assert out["dlens_rank"].shape == (5, 2) and out["logit_rank"].shape == (5, 2)
    assert out["nearest_dist"].shape == (5,) and out["nearest_token"].shape == (5,)
