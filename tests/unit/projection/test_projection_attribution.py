"""The movement view: per-head and per-neuron parts sum back to the sublayer outputs."""

import pytest
import torch
from helpers import build_model

from geomlens.projection import component_parts, step_attribution
from geomlens.projection.attribution import COLUMNS


def _with_random_biases(model):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.b_O.copy_(torch.randn(blk.attn.b_O.shape, generator=g) * 0.1)
            blk.mlp.b_out.copy_(torch.randn(blk.mlp.b_out.shape, generator=g) * 0.1)
    return model


@torch.no_grad()
@pytest.mark.parametrize("post_norm", [False, True])
def test_parts_sum_to_sublayer_outputs(post_norm, one_thread):
    model = _with_random_biases(build_model(use_normalization_before_and_after=post_norm))
    assert model.cfg.use_normalization_before_and_after == post_norm and model.cfg.n_layers == 2
    model.set_use_attn_result(True)  # independent reference for the per-head parts
    tokens = torch.randint(0, 50, (1, 9), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens)
    for layer in range(model.cfg.n_layers):
        for pos in (0, 4, 8):
            p = component_parts(model, cache, layer, pos)
            attn_out = cache[f"blocks.{layer}.hook_attn_out"][0, pos]
            mlp_out = cache[f"blocks.{layer}.hook_mlp_out"][0, pos]
            torch.testing.assert_close(p["attn"].sum(0), attn_out - p["attn_bias"][0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(p["mlp"].sum(0), mlp_out - p["mlp_bias"][0], atol=1e-5, rtol=1e-5)
            if not post_norm:
                torch.testing.assert_close(p["attn"], cache[f"blocks.{layer}.attn.hook_result"][0, pos])
                torch.testing.assert_close(p["attn_bias"][0], model.blocks[layer].attn.b_O)
            step = cache[f"blocks.{layer}.hook_resid_post"][0, pos] - cache[f"blocks.{layer}.hook_resid_pre"][0, pos]
            total = p["attn"].sum(0) + p["mlp"].sum(0) + p["attn_bias"][0] + p["mlp_bias"][0]
            torch.testing.assert_close(total, step, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_step_attribution_table(gqa_model):
    model = _with_random_biases(gqa_model)
    tokens = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(1))
    n_parts = model.cfg.n_heads + model.cfg.d_mlp
    df = step_attribution(model, tokens, pos=-1, top=n_parts)  # every part listed
    assert tuple(df.columns) == COLUMNS and len(df) == model.cfg.n_layers * n_parts
    logits, cache = model.run_with_cache(tokens)
    assert (df["target_token"] == str(int(logits[0, -1].argmax()))).all()
    for layer, rows in df.groupby("layer"):
        step = (cache[f"blocks.{layer}.hook_resid_post"] - cache[f"blocks.{layer}.hook_resid_pre"])[0, -1]
        p = component_parts(model, cache, layer, 5)
        bias = (p["attn_bias"][0] + p["mlp_bias"][0]) @ step / step.norm()
        assert rows["step_proj"].sum() + float(bias) == pytest.approx(float(step.norm()), rel=1e-4)
        assert sorted(rows["rank_step"]) == list(range(n_parts))
        assert (rows["component"] == "attn").sum() == model.cfg.n_heads
    top3 = step_attribution(model, tokens, pos=2, layers=[1], top=3)
    assert set(top3["layer"]) == {1} and ((top3["rank_step"] < 3) | (top3["rank_push"] < 3)).all()
    assert (top3["pos"] == 2).all() and top3["top_tokens"].str.count(r"\|").eq(4).all()
