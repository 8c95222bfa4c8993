"""First-layer K/V on smollm2-135m: a couple of short segments, patched vs clean."""

import json

import numpy as np
import pytest
import torch

from geomlens.data import tokenize_segments
from geomlens.kv import KVConfig, LayerMap, decode, patch_kv, run_kv, segment_losses

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def seqs(smollm2, eval_texts):
    out = tokenize_segments(smollm2.tokenizer, eval_texts[:2], max_tokens=24)
    assert len(out) == 2 and all(len(s) == 24 for s in out)
    return out


def test_patched_loss_is_higher_and_own_kv_is_clean(smollm2, seqs):
    clean, counts = segment_losses(smollm2, seqs)
    patched, _ = segment_losses(smollm2, seqs, layer_map=LayerMap.parse("all", 30))
    prev, _ = segment_losses(smollm2, seqs, layer_map=LayerMap.parse("all", 30), mode="prev")
    own, _ = segment_losses(smollm2, seqs, layer_map=LayerMap.own(30), mode="prev")
    assert counts.tolist() == [23, 23]
    assert patched.sum() > clean.sum() + 23 and prev.sum() > clean.sum()
    np.testing.assert_allclose(own, clean, rtol=1e-5)
    with torch.no_grad():
        loss = smollm2(seqs[0][None], return_type="loss")  # TransformerLens's own mean CE
    assert abs(clean[0] / 23 - loss.item()) < 1e-4


def test_first_layer_cache_decodes_like_the_patch(smollm2, seqs):
    lm = LayerMap.parse("all", 30)
    res = decode(smollm2, seqs[0][None, :8], lm, max_new_tokens=4)
    with patch_kv(smollm2, lm):
        full = smollm2(res.tokens)
    # float32 rounding: here the standard cache differs from the full forward by ~3e-5 and
    # the first-layer cache by ~2e-3 (the patched residual stream is large); in float64 both
    # differences are below 1e-11, so the gap is rounding, not a different computation.
    torch.testing.assert_close(res.logits, full[:, 7:-1], atol=1e-2, rtol=0)
    assert torch.equal(res.logits.argmax(-1), full[:, 7:-1].argmax(-1))
    assert res.cache.entries[0].past_keys.shape == (1, 11, 3, 64)  # GQA: 3 KV heads


def test_run_kv_writes_tables(smollm2, tmp_path):
    cfg = KVConfig(model="smollm2-135m", n_segments=1, max_tokens=16, n_bootstrap=50)
    summary = run_kv(cfg, tmp_path, model=smollm2)
    assert summary["patched_loss"] > summary["clean_loss"] and summary["cache_reduction"] == 30
    assert summary["cache_bytes_per_token_standard"] == 2 * 30 * 3 * 64 * 4
    json.dumps(summary, default=str)
    for name in ("losses.csv", "per_segment.csv", "figures/losses_by_domain.png"):
        assert (tmp_path / name).exists()


def test_text_in_equals_token_in(smollm2, tmp_path):
    import geomlens

    texts = ["The capital of France is Paris.", "Once upon a time there was a small cat."]
    by_text = segment_losses(smollm2, texts)
    by_ids = segment_losses(smollm2, [smollm2.to_tokens(t)[0] for t in texts])
    np.testing.assert_array_equal(by_text[0], by_ids[0])
    np.testing.assert_array_equal(by_text[1], [len(smollm2.to_tokens(t)[0]) - 1 for t in texts])
    res = geomlens.kv_losses(smollm2, texts, n_bootstrap=50)
    np.testing.assert_array_equal(res.per_segment.clean_ce_sum, by_text[0])
    assert res.summary["patched_loss"] > res.summary["clean_loss"]
    assert res.summary["model"] == "smollm2-135m" and res.summary["cache_reduction"] == 30
    prompt = decode(smollm2, texts[0], max_new_tokens=2)
    assert torch.equal(prompt.tokens[0, :-2], smollm2.to_tokens(texts[0])[0])
