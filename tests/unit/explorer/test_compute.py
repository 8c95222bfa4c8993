"""The explorer's cells against direct computations (cdist, softmax, scipy's JSD, the NDCG
formula, the cache)."""

import math

import numpy as np
import pytest
import torch
from helpers import build_model
from scipy.spatial.distance import jensenshannon

from geomlens.explorer.compute import MEASURES, compute_grid, row_hooks
from geomlens.fused import Fused
from geomlens.geometry.lens import ln_final_normalized

TOKENS = torch.tensor([3, 17, 5, 42, 8, 8, 21, 0, 33, 12])


@pytest.fixture(scope="module")
def model():
    return build_model()


@pytest.fixture(scope="module")
def grid(model):
    return compute_grid(model, TOKENS, sublayers=True)


@pytest.fixture(scope="module")
def cache(model):
    logits, cache = model.run_with_cache(TOKENS[None])
    return logits[0], cache


def _vector(model, lens, h):
    if lens == "distance_raw":
        return h
    if lens == "distance_ln_final":
        return ln_final_normalized(model, h[None])[0]
    return model.ln_final(h[None])[0]


def test_rows_and_shapes(model, grid):
    assert grid.rows == row_hooks(2, True)
    assert [h for _, h in grid.rows[:4]] == ["blocks.0.hook_resid_mid", "blocks.0.hook_attn_out",
                                             "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"]
    assert grid.top_ids.shape == (8, 10, 4, 10) and grid.step_norm.shape == (8, 10)
    assert set(MEASURES) == {"rank_final", "rank_next", "ndcg@10", "jsd", "step_norm", "attn_share"}


@torch.no_grad()
def test_top10_equal_direct_lenses(model, grid, cache):
    _, c = cache
    for r, (_, hook) in enumerate(grid.rows):
        h = c[hook][0]
        probs = torch.softmax(model.unembed(model.ln_final(h[None]))[0], -1)
        p_top = torch.topk(probs, 10)
        assert np.array_equal(grid.top_ids[r, :, 0], p_top.indices.numpy())
        np.testing.assert_allclose(grid.top_values[r, :, 0], p_top.values.numpy(), rtol=1e-4)
        for li, lens in enumerate(grid.lenses[1:], start=1):
            d = torch.cdist(_vector(model, lens, h), model.W_E)
            near = torch.topk(d, 10, largest=False)
            assert np.array_equal(grid.top_ids[r, :, li], near.indices.numpy()), lens
            np.testing.assert_allclose(grid.top_values[r, :, li], near.values.numpy(), rtol=1e-4)


@torch.no_grad()
def test_ranks_ndcg_jsd_against_formulas(model, grid, cache):
    logits, c = cache
    p = torch.softmax(logits, -1)
    final, nxt = logits.argmax(-1), TOKENS.roll(-1)
    gains = torch.expm1(p * math.log(2.0))
    disc = 1.0 / torch.log2(torch.arange(10) + 2.0)
    r = len(grid.rows) - 5  # some middle row
    h = c[grid.rows[r][1]][0]
    lens_logits = model.unembed(model.ln_final(h[None]))[0]
    scores = {"logit": lens_logits}
    for lens in grid.lenses[1:]:
        scores[lens] = -torch.cdist(_vector(model, lens, h), model.W_E)
    for li, lens in enumerate(grid.lenses):
        s = scores[lens]
        for pos in range(len(TOKENS)):
            assert grid.rank_final[r, pos, li] == int((s[pos] > s[pos, final[pos]]).sum())
            want_next = -1 if pos == len(TOKENS) - 1 else int((s[pos] > s[pos, nxt[pos]]).sum())
            assert grid.rank_next[r, pos, li] == want_next
            top = torch.topk(s[pos], 10).indices
            dcg = (gains[pos, top] * disc).sum()
            idcg = (torch.topk(gains[pos], 10).values * disc).sum()
            assert grid.ndcg[r, pos, li] == pytest.approx(float(dcg / idcg), abs=1e-5)
    want = [jensenshannon(p[i].double().numpy(), torch.softmax(lens_logits[i], -1).double().numpy()) ** 2
            for i in range(len(TOKENS))]
    np.testing.assert_allclose(grid.jsd[r, :, 0], want, atol=1e-5)
    assert np.isnan(grid.jsd[r, :, 1:]).all()  # distance lenses define no distribution


def test_last_row_is_the_model(grid):
    last = len(grid.rows) - 1
    assert np.array_equal(grid.top_ids[last, :, 0, 0], grid.final_top1)
    assert (grid.rank_final[last, :, 0] == 0).all()
    np.testing.assert_allclose(grid.ndcg[last, :, 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(grid.jsd[last, :, 0], 0.0, atol=1e-5)


def test_movement_measures(grid, cache):
    _, c = cache
    for r, (layer, _) in enumerate(grid.rows):
        step = c[f"blocks.{layer}.hook_resid_post"][0] - c[f"blocks.{layer}.hook_resid_pre"][0]
        attn = c[f"blocks.{layer}.hook_attn_out"][0]
        np.testing.assert_allclose(grid.step_norm[r], step.norm(dim=-1).numpy(), rtol=1e-5)
        share = (attn * step).sum(-1) / step.pow(2).sum(-1)
        np.testing.assert_allclose(grid.attn_share[r], share.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cells", [3, 25])
def test_position_chunks_give_the_same_cells(model, grid, cells):
    """3 cells per matmul: blocks of 3 positions, one row each; 25: all 10 positions, 2 rows
    stacked; the fixture: all 8 rows stacked in one matmul."""
    small = compute_grid(model, TOKENS, sublayers=True, vocab_budget=cells * model.cfg.d_vocab)
    for name in ("top_ids", "rank_final", "rank_next"):
        assert np.array_equal(getattr(small, name), getattr(grid, name)), name
    for name in ("top_values", "ndcg", "step_norm"):
        np.testing.assert_allclose(getattr(small, name), getattr(grid, name), rtol=1e-5)


def test_compiled_jsd_changes_only_the_summation_order(model, grid):
    """The logit lens's JSD pass compiled (what a large vocabulary gets) against eager: the
    same cells; the JSD and the logit lens's probabilities (through q's log-sum-exp) to float32
    summation order."""
    compiled = compute_grid(model, TOKENS, sublayers=True, fused=Fused("compile", dynamic_rows=True))
    eager = compute_grid(model, TOKENS, sublayers=True, fused=Fused("eager"))
    for name in ("top_ids", "rank_final", "rank_next", "ndcg"):
        assert np.array_equal(getattr(compiled, name), getattr(eager, name)), name
    np.testing.assert_allclose(compiled.top_values, eager.top_values, rtol=1e-6)  # p: its lse
    np.testing.assert_allclose(compiled.jsd, eager.jsd, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(grid.jsd, eager.jsd, atol=1e-6, equal_nan=True)
