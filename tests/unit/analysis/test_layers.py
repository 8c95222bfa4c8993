"""The layer lens (`geomlens.analysis.layers`): NDCG per layer and lens against independent
references (sklearn's ndcg_score, scipy distances, a hand-written norm and unembed), its exact
cases (the logit lens at the last layer; the distance lens of an equal-norm tied toy model),
the affine shortcut vs its fallback, seeded sampling, and the in-pass capture of `analyze`."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import build_model
from scipy.spatial.distance import cdist
from sklearn.metrics import ndcg_score

from geomlens.analysis import AnalyzeConfig, analyze_tokens
from geomlens.analysis import layers as layers_mod
from geomlens.analysis.layers import (
    LENSES,
    affine_fit,
    layer_hook_names,
    layer_ndcg,
    sample_positions,
)

LENS_NAMES = ("distance_raw", "distance_ln_final", "distance_ln_final_gain", "logit")


def _model(**kw):
    model = build_model(**kw)
    with torch.no_grad():  # a gain != 1, so the logit lens differs from the distance lens
        model.ln_final.w.copy_(torch.rand(model.cfg.d_model) + 0.5)
    return model


@torch.no_grad()
def _reference_scores(model, tokens, b, pos):
    """Independent per-layer scores at one position: scipy distances, the RMS norm written out."""
    logits, cache = model.run_with_cache(tokens)
    p = torch.softmax(logits[b, pos].double(), -1).numpy()
    W_E = model.W_E.double().numpy()
    out = {}
    for layer, hook in layer_hook_names(model.cfg.n_layers).items():
        h = cache[hook][b, pos].double()
        n = h / (h.pow(2).mean() + model.cfg.eps).sqrt()
        out[layer] = {
            "distance_raw": -cdist(h[None].numpy(), W_E)[0],
            "distance_ln_final": -cdist(n[None].numpy(), W_E)[0],
            "distance_ln_final_gain": -cdist((n * model.ln_final.w.double())[None].numpy(), W_E)[0],
            "logit": ((n * model.ln_final.w.double()) @ model.W_U.double()
                      + model.b_U.double()).numpy(),
        }
    return p, out


def test_lens_registry_names():
    assert LENSES.names() == LENS_NAMES


@pytest.mark.parametrize("topk", [50, 12])
def test_ndcg_matches_sklearn(topk):
    """gain=linear is sklearn's NDCG; with K = vocab every value is exact, with K < vocab @10
    stays exact and NDCG@full is within its reported bound."""
    model = _model()
    tokens = torch.randint(0, 50, (2, 9))
    df = layer_ndcg(model, tokens, positions=None, gain="linear", topk=topk)
    assert len(df) == 2 * 9 * (model.cfg.n_layers + 1) * 4
    for b, pos in [(0, 0), (0, 5), (1, 8)]:
        p, ref = _reference_scores(model, tokens, b, pos)
        rows = df[(df.segment == str(b)) & (df.pos == pos)]
        for layer, scores in ref.items():
            for lens, score in scores.items():
                row = rows[(rows.layer == layer) & (rows.lens == lens)].iloc[0]
                assert row.hook == layer_hook_names(2)[layer]
                assert row["ndcg@10"] == pytest.approx(ndcg_score([p], [score], k=10), abs=2e-5)
                full = ndcg_score([p], [score])
                assert abs(row["ndcg@full"] - full) <= row["ndcg_full_err"] + 2e-5
                if topk >= 50:
                    assert row["ndcg_full_err"] == 0.0


@pytest.mark.parametrize("normalization_type", ["RMS", "LN"])
def test_logit_lens_at_the_last_layer_is_perfect(normalization_type):
    model = _model(normalization_type=normalization_type, final_rms=normalization_type == "RMS")
    df = layer_ndcg(model, torch.randint(0, 50, (3, 8)), positions=None, topk=16)
    last = df[(df.layer == model.cfg.n_layers - 1) & (df.lens == "logit")]
    assert len(last) == 24 and (last["ndcg_full_err"] > 0).any()  # the bound is in play
    np.testing.assert_allclose(last["ndcg@10"], 1.0, atol=1e-5)
    assert ((last["ndcg@full"] - 1.0).abs() <= last["ndcg_full_err"] + 1e-5).all()
    assert (last["top1"] == 1.0).all() and (last["top10"] == 1.0).all()


@pytest.mark.parametrize("normalization_type", ["RMS", "LN"])
@torch.no_grad()
def test_distance_lens_of_an_equal_norm_tied_model_ranks_like_its_logits(normalization_type):
    """With ‖W_E[v]‖ constant, W_U = W_E^T, b_U = 0 and ln_final's gain 1 (LN bias 0), the
    logits are n(h)·e = (‖n‖² + ‖e‖² − ‖n − e‖²)/2: distance_ln_final ranks exactly like p."""
    model = build_model(normalization_type=normalization_type,
                        final_rms=normalization_type == "RMS")
    W_E = model.embed.W_E
    W_E.copy_(2.0 * W_E / W_E.norm(dim=-1, keepdim=True))
    model.unembed.W_U.copy_(W_E.T)
    model.unembed.b_U.zero_()
    assert torch.equal(model.ln_final.w, torch.ones_like(model.ln_final.w))
    df = layer_ndcg(model, torch.randint(0, 50, (3, 8)), positions=None, topk=16)
    last = df[(df.layer == model.cfg.n_layers - 1) & (df.lens == "distance_ln_final")]
    np.testing.assert_allclose(last["ndcg@10"], 1.0, atol=1e-5)
    assert ((last["ndcg@full"] - 1.0).abs() <= last["ndcg_full_err"] + 1e-5).all()
    assert (last["top1"] == 1.0).all()
    if normalization_type == "RMS":  # n(h) = h / rms(h): the raw lens ranks alike
        raw = df[(df.layer == model.cfg.n_layers - 1) & (df.lens == "distance_raw")]
        np.testing.assert_allclose(raw["ndcg@10"], 1.0, atol=1e-5)


def test_affine_fit_and_its_fallback_agree(monkeypatch):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(5, 16, generator=g)
    a, b = affine_fit(h, 0.5 * h - 2.0)
    torch.testing.assert_close(a, torch.full((5, 1), 0.5))
    torch.testing.assert_close(b, torch.full((5, 1), -2.0), atol=1e-5, rtol=1e-5)
    assert affine_fit(h, h.pow(3)) is None and affine_fit(h, -h) is None
    model = _model(normalization_type="LN", final_rms=False)
    tokens = torch.randint(0, 50, (2, 7))
    fast = layer_ndcg(model, tokens, positions=None, topk=10, lenses=["distance_ln_final"])
    monkeypatch.setattr(layers_mod, "affine_fit", lambda h, x: None)
    slow = layer_ndcg(model, tokens, positions=None, topk=10, lenses=["distance_ln_final"])
    pd.testing.assert_frame_equal(fast, slow, atol=1e-5, rtol=0)


def _tie(model, scale: float = 1.0):
    """W_U = W_E^T / scale (scale a power of 2: then W_E == scale · W_U^T exactly)."""
    with torch.no_grad():
        model.unembed.W_U.copy_(model.W_E.T / scale)
        model.unembed.b_U.copy_(torch.randn(model.cfg.d_vocab))  # the shortcut subtracts it
    return model


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_tied_shortcut_of_the_gain_lens_equals_its_own_matmul(monkeypatch, scale):
    """W_E = c W_U^T (c = 1: tied; c = 4: an embedding scale folded into W_E, as Gemma's loader
    does): the gain lens from the logit lens equals its own matmul of ln_final(h) with W_E."""
    model = _tie(_model(), scale)
    tokens = torch.randint(0, 50, (2, 7))
    assert layers_mod.LensContext.of(model).tie_scale == scale
    fast = layer_ndcg(model, tokens, positions=None, topk=10, lenses=["distance_ln_final_gain"])
    of = layers_mod.LensContext.of
    monkeypatch.setattr(layers_mod.LensContext, "of",
                        classmethod(lambda cls, m: dataclasses.replace(of(m), tie_scale=None)))
    slow = layer_ndcg(model, tokens, positions=None, topk=10, lenses=["distance_ln_final_gain"])
    pd.testing.assert_frame_equal(fast, slow, atol=1e-5, rtol=0)


def test_seeded_sampling_is_deterministic():
    a = sample_positions(100, 10, seed=4)
    assert torch.equal(a, sample_positions(100, 10, seed=4))
    assert not torch.equal(a, sample_positions(100, 10, seed=5))
    assert len(a.unique()) == 10 and bool((a[1:] > a[:-1]).all()) and int(a.max()) < 100
    assert torch.equal(sample_positions(7, None, seed=0), torch.arange(7))
    assert torch.equal(sample_positions(7, 50, seed=0), torch.arange(7))
    model = _model()
    tokens, lengths = torch.randint(0, 50, (3, 10)), torch.tensor([10, 4, 8])
    one = layer_ndcg(model, tokens, lengths, positions=9, seed=1, position_chunk=4)
    two = layer_ndcg(model, tokens, lengths, positions=9, seed=1)
    pd.testing.assert_frame_equal(one, two, atol=1e-6, rtol=0)
    assert len(one) == 9 * 3 * 4 and one.groupby(["segment", "pos"]).ngroups == 9
    assert (one[one.segment == "1"].pos < 4).all()  # padding is never sampled


def _seqs():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 50, (n,), generator=g) for n in (10, 7, 12, 5, 9)]


def _cfg(**kw):
    base = dict(model="tiny", n_bootstrap=50, controls=False, trajectories=False, batch_size=2,
                scores=["dot"], hidden=["ln_final"], target=["W_E"], spearman=False)
    return AnalyzeConfig(**{**base, **kw})


def test_analyze_captures_the_layers_in_its_own_pass():
    """Rows the pipeline captured across batches equal `layer_ndcg` on each sequence alone."""
    model = _model()
    seqs = _seqs()
    res = analyze_tokens(model, seqs, _cfg(layer_lens_positions=None))
    got = res.layers
    assert len(got) == sum(len(s) for s in seqs) * 3 * 4
    for i in (1, 4):
        alone = layer_ndcg(model, seqs[i][None], positions=None, segment_ids=[str(i)])
        mine = got[got.segment == str(i)].reset_index(drop=True)
        key = ["pos", "layer", "lens"]
        pd.testing.assert_frame_equal(
            mine.sort_values(key).reset_index(drop=True).drop(columns="domain"),
            alone.sort_values(key).reset_index(drop=True).drop(columns="domain"),
            atol=1e-5, rtol=0, check_dtype=False, check_categorical=False)
    sampled = analyze_tokens(model, seqs, _cfg(layer_lens_positions=11)).layers
    assert sampled.groupby(["segment", "pos"]).ngroups == 11
    assert analyze_tokens(model, seqs, _cfg(layer_lens=False)).layers is None


@pytest.mark.parametrize("tied", [False, True])
def test_last_layer_gain_lens_is_the_main_tables_ln_final_distance(tied):
    """distance_ln_final_gain at the last layer = the main analysis's ln_final / W_E distance
    ranking (same positions, same NDCG implementation)."""
    model = _tie(_model()) if tied else _model()
    res = analyze_tokens(model, _seqs(), _cfg(layer_lens_positions=None, scores=["neg_dist"],
                                              keep_per_token=True, topk_exact=16,
                                              ks=[10, None]))
    lay = res.layers
    lay = lay[(lay.layer == model.cfg.n_layers - 1) & (lay.lens == "distance_ln_final_gain")]
    main = res.per_token
    merged = lay.merge(main, on=["segment", "pos"], suffixes=("", "_main"))
    assert len(merged) == len(lay) == sum(len(s) for s in _seqs())
    for m in ("ndcg@10", "ndcg@full", "top1"):
        np.testing.assert_allclose(merged[m], merged[f"{m}_main"], atol=1e-5)


def test_layer_ndcg_takes_text():
    """Texts give the same rows as their token ids, padded with their lengths."""
    from helpers import CharTokenizer, text_model

    model = text_model()
    ids = [CharTokenizer()(t)["input_ids"] for t in ("hello", "abc")]
    tokens = torch.tensor([ids[0], ids[1] + [0, 0]])
    by_ids = layer_ndcg(model, tokens, torch.tensor([5, 3]), positions=None)
    pd.testing.assert_frame_equal(layer_ndcg(model, ["hello", "abc"], positions=None), by_ids)
