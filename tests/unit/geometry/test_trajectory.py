"""Trajectory statistics: identities of the residual stream, references and properties."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import build_model
from sklearn.metrics.pairwise import cosine_similarity, euclidean_distances

from geomlens.geometry import summarize_layers, trajectory, trajectory_stats
from geomlens.geometry.figures import plot_layer_curves, plot_pca_trajectories
from geomlens.geometry.trajectory import COLUMNS


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 50, (3, 9), generator=g), torch.tensor([9, 4, 6])


def test_step_is_attn_plus_mlp(tiny_model, batch):
    """dh = resid_post - resid_pre = attn_out + mlp_out, and resid_mid = resid_pre + attn_out."""
    _, cache = tiny_model.run_with_cache(batch[0])
    for layer in range(tiny_model.cfg.n_layers):
        c = lambda name: cache[f"blocks.{layer}.{name}"]  # noqa: E731
        torch.testing.assert_close(c("hook_resid_post") - c("hook_resid_pre"),
                                   c("hook_attn_out") + c("hook_mlp_out"))
        torch.testing.assert_close(c("hook_resid_mid"), c("hook_resid_pre") + c("hook_attn_out"))


def test_rows_columns_and_padding(tiny_model, batch):
    tokens, lengths = batch
    df = trajectory_stats(tiny_model, tokens, lengths)
    n_layers = tiny_model.cfg.n_layers
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == int(lengths.sum()) * n_layers
    assert (df.pos < lengths.numpy()[df.batch_idx]).all()
    assert df.token_id.to_numpy().tolist() == tokens[df.batch_idx, df.pos].tolist()
    # next-token ranks are NaN exactly at each sequence's last valid position
    last = df.pos == lengths.numpy()[df.batch_idx] - 1
    assert df.loc[last, "dlens_rank_next"].isna().all() and df.loc[last, "logit_rank_next"].isna().all()
    assert df.loc[~last, "dlens_rank_next"].notna().all()
    # padding does not change a sequence's rows: compare with the sequence run alone
    alone = trajectory_stats(tiny_model, tokens[1:2, :4])
    mine = df[df.batch_idx == 1].drop(columns="batch_idx").reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, alone.drop(columns="batch_idx"), check_dtype=False, atol=1e-5)


def test_stats_match_direct_formulas(tiny_model, batch):
    tokens, _ = batch
    df = trajectory_stats(tiny_model, tokens)
    _, cache = tiny_model.run_with_cache(tokens)
    steps = []
    for layer in range(tiny_model.cfg.n_layers):
        rows = df[df.layer == layer]
        b, p = rows.batch_idx.to_numpy().copy(), rows.pos.to_numpy().copy()
        get = lambda n: cache[f"blocks.{layer}.{n}"][b, p].numpy().astype(np.float64)  # noqa: E731
        step = get("hook_resid_post") - get("hook_resid_pre")
        attn, mlp, post = get("hook_attn_out"), get("hook_mlp_out"), get("hook_resid_post")
        np.testing.assert_allclose(rows.step_norm, np.linalg.norm(step, axis=1), rtol=1e-5)
        np.testing.assert_allclose(rows.attn_norm, np.linalg.norm(attn, axis=1), rtol=1e-5)
        np.testing.assert_allclose(rows.mlp_norm, np.linalg.norm(mlp, axis=1), rtol=1e-5)
        np.testing.assert_allclose(rows.attn_share, (attn * step).sum(1) / (step**2).sum(1), rtol=1e-4)
        np.testing.assert_allclose(rows.mlp_cos, np.diag(cosine_similarity(mlp, step)), rtol=1e-4, atol=1e-6)
        d = euclidean_distances(post, tiny_model.W_E.detach().numpy().astype(np.float64))
        np.testing.assert_allclose(rows.nearest_dist, d.min(1), rtol=1e-4)
        np.testing.assert_array_equal(rows.nearest_token_id, d.argmin(1))
        if layer == 0:
            assert rows.inertia_cos.isna().all()
        else:
            ref = np.diag(cosine_similarity(step, steps[-1]))
            np.testing.assert_allclose(rows.inertia_cos, ref, rtol=1e-4, atol=1e-6)
        steps.append(step)
    # properties: the two projection shares sum to 1; cosines are in [-1, 1]
    np.testing.assert_allclose(df.attn_share + df.mlp_share, 1.0, atol=1e-4)
    for col in ("attn_cos", "mlp_cos", "inertia_cos"):
        assert df[col].dropna().between(-1 - 1e-6, 1 + 1e-6).all()


def test_hook_next_token_rank_consistent_with_logits(tiny_model, batch):
    tokens, lengths = batch
    df = trajectory_stats(tiny_model, tokens, lengths)
    logits = tiny_model(tokens)
    last = df[(df.layer == tiny_model.cfg.n_layers - 1) & df.logit_rank_next.notna()]
    b, p = last.batch_idx.to_numpy().copy(), last.pos.to_numpy().copy()
    lg = logits[b, p]
    nxt = tokens[b, p + 1]
    ref = (lg > lg.gather(1, nxt[:, None])).sum(1)
    np.testing.assert_array_equal(last.logit_rank_next.to_numpy(), ref.numpy())
    assert (last.logit_rank_top1 == 0).all()


def test_summarize_layers_against_numpy(tiny_model, batch):
    tokens, lengths = batch
    df = trajectory_stats(tiny_model, tokens, lengths)
    df["domain"] = np.where(df.batch_idx == 0, "news", "fiction")
    by_layer = summarize_layers(df)
    assert len(by_layer) == tiny_model.cfg.n_layers
    for layer, row in by_layer.set_index("layer").iterrows():
        sub = df[df.layer == layer]
        assert row.n_tokens == len(sub)
        assert np.isclose(row.step_norm_mean, np.mean(sub.step_norm))
        assert np.isclose(row.dlens_rank_next_median, np.nanmedian(sub.dlens_rank_next))
    by_domain = summarize_layers(df, by=("domain", "layer"))
    assert len(by_domain) == 2 * tiny_model.cfg.n_layers
    row = by_domain[(by_domain.domain == "news") & (by_domain.layer == 1)].iloc[0]
    sub = df[(df.domain == "news") & (df.layer == 1)]
    assert np.isclose(row.inertia_cos_mean, sub.inertia_cos.mean())
    assert "token_mean" not in by_domain.columns and "batch_idx_mean" not in by_domain.columns


def test_trajectory_points(tiny_model, batch):
    tokens = batch[0][0]
    traj = trajectory(tiny_model, tokens)
    assert traj.shape == (tiny_model.cfg.n_layers + 1, len(tokens), tiny_model.cfg.d_model)
    # rotary model: h^0 is the token embedding itself
    torch.testing.assert_close(traj[0], tiny_model.W_E[tokens])
    _, cache = tiny_model.run_with_cache(tokens[None])
    torch.testing.assert_close(traj[-1], cache[f"blocks.{tiny_model.cfg.n_layers - 1}.hook_resid_post"][0])
    steps = traj[1:] - traj[:-1]
    torch.testing.assert_close(steps[0], cache["blocks.0.hook_attn_out"][0] + cache["blocks.0.hook_mlp_out"][0])


def test_plots_write_pngs(tiny_model, batch, tmp_path):
    tokens, lengths = batch
    df = trajectory_stats(tiny_model, tokens, lengths)
    paths = plot_layer_curves(summarize_layers(df), tmp_path)
    assert [p.name for p in paths] == ["step_norms.png", "inertia.png", "lens_ranks.png"]
    df["domain"] = np.where(df.batch_idx == 0, "a", "b")
    paths += plot_layer_curves(summarize_layers(df, by=("domain", "layer")), tmp_path / "dom")
    out = plot_pca_trajectories(build_model(), tokens[0], tmp_path / "pca.png", n_tokens=3, n_neighbors=4)
    for p in paths + [out]:
        assert p.exists() and p.read_bytes()[:4] == b"\x89PNG"


def test_text_in_and_token_columns():
    """A text, a list of texts and the same token ids give the same table; tokens are named as
    text (the tokenizer's decoding) with their ids beside them."""
    from helpers import CharTokenizer, text_model

    model = text_model()
    texts = ["hello", "abc"]
    by_text = trajectory_stats(model, texts)
    ids = [CharTokenizer()(t)["input_ids"] for t in texts]
    tokens = torch.tensor([ids[0], ids[1] + [0, 0]])
    by_ids = trajectory_stats(model, tokens, torch.tensor([5, 3]))
    pd.testing.assert_frame_equal(by_text, by_ids)
    one = trajectory_stats(model, "hello")
    pd.testing.assert_frame_equal(one, by_text[by_text.batch_idx == 0].reset_index(drop=True))
    decode = CharTokenizer().decode
    assert by_text.token.tolist() == [decode([i]) for i in by_text.token_id]
    assert by_text.nearest_token.tolist() == [decode([i]) for i in by_text.nearest_token_id]
    assert (by_text.token_id.to_numpy() == tokens[by_text.batch_idx, by_text.pos].numpy()).all()


def test_stacked_layers_give_the_same_rows(tiny_model, batch, monkeypatch):
    """Lens ranks of all layers computed in one stacked matmul per vocabulary chunk equal one
    layer at a time (STACK_ROWS = 1): the grouping changes speed only."""
    import importlib

    traj = importlib.import_module("geomlens.geometry.trajectory")  # the package's `trajectory` is a function
    tokens, lengths = batch
    stacked = traj.trajectory_stats(tiny_model, tokens, lengths)
    monkeypatch.setattr(traj, "STACK_ROWS", 1)
    one_by_one = traj.trajectory_stats(tiny_model, tokens, lengths)
    pd.testing.assert_frame_equal(stacked, one_by_one)
