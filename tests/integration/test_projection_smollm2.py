"""Parameters in embedding space on the real smollm2-135m (one layer, a few neurons and heads)."""

import numpy as np
import pytest
import torch

from geomlens.projection import COLUMNS, component_parts, project_parameters, step_attribution

pytestmark = pytest.mark.integration


@torch.no_grad()
def test_projection_on_smollm2(smollm2):
    sub = torch.arange(4096)  # ov/qk among the first 4,096 token ids (keeps the test short)
    df = project_parameters(smollm2, ["mlp_in", "mlp_gate", "mlp_out", "ov", "qk", "v"], [3],
                            heads=[0], neurons=[0, 1], k=5, pair_token_ids=sub)
    assert tuple(df.columns) == COLUMNS
    assert set(df["kind"]) == {"mlp_in", "mlp_gate", "mlp_out", "ov", "qk", "v"}
    out = df[(df.kind == "mlp_out") & (df.neuron == 1) & (df.direction == "top")]
    ref = (smollm2.blocks[3].mlp.W_out[1] @ smollm2.W_U).topk(5)
    np.testing.assert_array_equal(out["token_id"].to_numpy(dtype=int), ref.indices.numpy())
    assert list(out["token"]) == [smollm2.tokenizer.decode([i]) for i in ref.indices.tolist()]
    # SmolLM2 is tied (W_U = W_Eᵀ): reading mlp_out through W_E gives the same tokens
    via_e = project_parameters(smollm2, ["mlp_out"], [3], neurons=[1], k=5, through="W_E")
    assert list(via_e[via_e.direction == "top"]["token_id"]) == list(out["token_id"])
    ov = df[(df.kind == "ov") & (df.direction == "top")]
    dense = (smollm2.W_E[sub] @ smollm2.OV[3, 0].AB @ smollm2.W_U[:, sub]).reshape(-1).topk(5)
    np.testing.assert_array_equal(ov["src_token_id"].to_numpy(dtype=int), (dense.indices // 4096).numpy())
    np.testing.assert_array_equal(ov["token_id"].to_numpy(dtype=int), (dense.indices % 4096).numpy())
    print(df[df.direction == "top"].groupby(["kind", "head", "neuron"], dropna=False)["token"]
          .apply(lambda t: ", ".join(map(repr, t))).to_string())


@torch.no_grad()
def test_step_attribution_on_smollm2(smollm2):
    text = "The capital of France is"
    df = step_attribution(smollm2, text, layers=[0, 15, 29], top=5)
    assert set(df["layer"]) == {0, 15, 29} and (df["target_token"] == df["target_token"].iloc[0]).all()
    tokens = smollm2.to_tokens(text)
    _, cache = smollm2.run_with_cache(tokens)
    for layer in (0, 29):
        p = component_parts(smollm2, cache, layer, tokens.shape[1] - 1)
        torch.testing.assert_close(p["mlp"].sum(0) + p["mlp_bias"][0],
                                   cache[f"blocks.{layer}.hook_mlp_out"][0, -1], atol=2e-3, rtol=1e-3)
        torch.testing.assert_close(p["attn"].sum(0) + p["attn_bias"][0],
                                   cache[f"blocks.{layer}.hook_attn_out"][0, -1], atol=2e-3, rtol=1e-3)
    print(df[["layer", "component", "head", "neuron", "step_share", "push", "top_tokens",
              "target_token"]].to_string())
