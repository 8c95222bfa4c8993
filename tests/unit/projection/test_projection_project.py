"""The projection table: planted parameters are found, and every kind equals the dense product."""

import numpy as np
import pandas as pd
import pytest
import torch

from geomlens.errors import InputError
from geomlens.projection import COLUMNS, available_kinds, project_pairs, project_parameters


def test_table_schema_and_kinds(gqa_model):
    df = project_parameters(gqa_model, layers=[1], neurons=[0, 1], k=3)
    assert tuple(df.columns) == COLUMNS
    assert set(df["kind"]) == set(available_kinds(gqa_model)) == {
        "mlp_in", "mlp_gate", "mlp_out", "ov", "qk", "q", "k", "v", "o"}
    assert set(df["direction"]) == {"top", "bottom"}
    for c in ("layer", "head", "neuron", "rank", "token_id", "src_token_id"):
        assert str(df[c].dtype) == "Int64"
    mlp, pair = df[df.kind.str.startswith("mlp")], df[df.kind.isin(["ov", "qk"])]
    assert mlp["head"].isna().all() and mlp["neuron"].notna().all() and mlp["src_token_id"].isna().all()
    assert pair["neuron"].isna().all() and pair["src_token_id"].notna().all()
    assert len(mlp) == 3 * 2 * 2 * 3  # kinds x neurons x directions x k
    assert len(df[df.kind == "k"]) == 2 * 2 * 2 * 3  # 2 KV heads (GQA) x 2 coordinates
    assert set(df.loc[df.kind == "mlp_out", "through"]) == {"W_U"}
    assert set(df.loc[df.kind == "mlp_in", "through"]) == {"W_E"}
    assert set(df.loc[df.kind == "ov", "through"]) == {"W_E/W_U"}
    top = df[df.direction == "top"].groupby(["kind", "head", "neuron"], dropna=False)["score"]
    assert (top.diff().dropna() <= 1e-6).all()  # sorted best first


@torch.no_grad()
def test_planted_neuron_ranks_its_token_first(gqa_model):
    t = 17
    W_U = gqa_model.W_U
    gqa_model.blocks[1].mlp.W_out[5] = W_U[:, t] / W_U[:, t].norm() * 3.0
    df = project_parameters(gqa_model, ["mlp_out"], [1], neurons=[5], k=5)
    top = df[df.direction == "top"]
    assert top.iloc[0]["token_id"] == t and top.iloc[0]["rank"] == 0
    cos = (W_U.T / W_U.norm(dim=0)[:, None]) @ (W_U[:, t] / W_U[:, t].norm())
    assert cos.argmax() == t  # sanity: the reference ranking agrees


@torch.no_grad()
def test_planted_ov_copy_circuit_is_found_first(gqa_model):
    """Head 1 (KV head 0) reads direction d1 of token a's embedding and writes d2 = b's
    unembedding: the ov search returns (a -> b) first."""
    m, a, b, layer, head = gqa_model, 7, 31, 0, 1
    d = m.cfg.d_model
    d1, d2 = torch.zeros(d), torch.zeros(d)
    d1[3], d2[5] = 1.0, 1.0
    scale = 10 * max(m.W_E.abs().max(), m.W_U.abs().max())
    m.embed.W_E[a] = d1 * scale
    m.unembed.W_U[:, b] = d2 * scale
    attn = m.blocks[layer].attn
    attn._W_V[head // 2].zero_()
    attn._W_V[head // 2][:, 0] = d1
    attn.W_O[head].zero_()
    attn.W_O[head][0] = d2
    df, _ = project_pairs(m, "ov", layer, head, k=3)
    first = df[df.direction == "top"].iloc[0]
    assert (first["src_token_id"], first["token_id"]) == (a, b)
    assert first["score"] == pytest.approx(float(scale) ** 2, rel=1e-5)


def _dense_vector_scores(model, kind, layer):
    blk = model.blocks[layer]
    if kind == "mlp_in":
        return blk.mlp.W_in.T @ model.W_E.T
    if kind == "mlp_gate":
        return blk.mlp.W_gate.T @ model.W_E.T
    if kind == "mlp_out":
        return blk.mlp.W_out @ model.W_U
    if kind == "v":  # KV heads: [kv, d_model, d_head] -> rows (kv, coordinate)
        return blk.attn._W_V.permute(0, 2, 1).reshape(-1, model.cfg.d_model) @ model.W_E.T
    if kind == "o":
        return blk.attn.W_O.reshape(-1, model.cfg.d_model) @ model.W_U
    raise KeyError(kind)


@torch.no_grad()
@pytest.mark.parametrize("kind", ["mlp_in", "mlp_gate", "mlp_out", "v", "o"])
def test_vector_kinds_equal_dense(gqa_model, kind):
    df = project_parameters(gqa_model, [kind], [1], k=4)
    S = _dense_vector_scores(gqa_model, kind, 1)
    for direction, largest in (("top", True), ("bottom", False)):
        got = df[df.direction == direction]
        v, ix = S.topk(4, dim=-1, largest=largest)
        np.testing.assert_array_equal(got["token_id"].to_numpy(dtype=int), ix.reshape(-1).numpy())
        np.testing.assert_allclose(got["score"].to_numpy(), v.reshape(-1).numpy(), rtol=1e-5, atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("kind", ["ov", "qk"])
def test_pair_kinds_equal_dense_with_gqa(gqa_model, kind):
    m = gqa_model
    E, U = m.W_E, m.W_U
    for head in range(m.cfg.n_heads):
        if kind == "ov":  # rows: source tokens, columns: output tokens
            dense = E @ m.blocks[1].attn.W_V[head] @ m.blocks[1].attn.W_O[head] @ U
        else:  # rows: query tokens, columns: key tokens
            dense = E @ m.blocks[1].attn.W_Q[head] @ m.blocks[1].attn.W_K[head].T @ E.T
        df, _ = project_pairs(m, kind, 1, head, k=6)
        for direction, largest in (("top", True), ("bottom", False)):
            got = df[df.direction == direction]
            v, flat = dense.reshape(-1).topk(6, largest=largest)
            rows, cols = (flat // dense.shape[1]).numpy(), (flat % dense.shape[1]).numpy()
            src, tok = (rows, cols) if kind == "ov" else (cols, rows)
            np.testing.assert_array_equal(got["src_token_id"].to_numpy(dtype=int), src)
            np.testing.assert_array_equal(got["token_id"].to_numpy(dtype=int), tok)
            np.testing.assert_allclose(got["score"].to_numpy(), v.numpy(), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_pair_token_subset_and_through_override(gqa_model):
    m, sub = gqa_model, torch.tensor([3, 9, 11, 20, 40, 41])
    df, stats = project_pairs(m, "ov", 0, 2, k=4, pair_token_ids=sub, through="W_E")
    dense = (m.W_E @ m.OV[0, 2].AB @ m.W_E.T)[sub][:, sub]
    v, flat = dense.reshape(-1).topk(4)
    np.testing.assert_array_equal(df[df.direction == "top"]["src_token_id"].to_numpy(dtype=int),
                                  sub[flat // len(sub)].numpy())
    np.testing.assert_allclose(df[df.direction == "top"]["score"].to_numpy(), v.numpy(), rtol=1e-5)
    assert set(df["through"]) == {"W_E/W_E"} and stats["n_rows"] == len(sub)


def test_bad_requests_raise(gqa_model):
    with pytest.raises(InputError):
        project_parameters(gqa_model, ["mlp_in"], [5])
    with pytest.raises(InputError):
        project_parameters(gqa_model, ["bogus"], [0])
    with pytest.raises(InputError):
        project_parameters(gqa_model, ["mlp_in"], [0], through="W_X")
    assert isinstance(project_parameters(gqa_model, ["q"], [0], heads=[1], neurons=[0, 99], k=2),
                      pd.DataFrame)  # head coordinates beyond d_head are dropped
