"""The projection thread's notebook objects: HTML headline, tables, Figures, save (tiny models)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import build_model
from matplotlib.figure import Figure

import geomlens
from geomlens.errors import InputError
from geomlens.projection.result import StitchResult
from geomlens.projection.stitch import stitch_rows


def _tokens(n=6, length=12, d_vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, d_vocab, (n, length), generator=g)


def test_project_result_table_html_plot_save(gqa_model, tmp_path):
    res = geomlens.project(gqa_model, ["mlp_out", "ov"], layers=[1], heads=[0], neurons=[0, 1], k=4,
                           pair_tokens=None)
    table = res.table
    assert {"token", "token_id", "src_token", "src_token_id"} <= set(table.columns)
    vec = table[table["kind"] == "mlp_out"]
    # token text beside its id; scores against a direct projection of the W_out row through W_U
    direct = gqa_model.blocks[1].mlp.W_out[0] @ gqa_model.W_U
    top = vec[(vec["neuron"] == 0) & (vec["direction"] == "top")].sort_values("rank")
    assert top["token_id"].tolist() == direct.topk(4).indices.tolist()
    np.testing.assert_allclose(top["score"].to_numpy(dtype=float), direct.topk(4).values.detach().numpy(), rtol=1e-5)
    assert all(isinstance(t, str) for t in top["token"])
    html = res._repr_html_()
    assert "<b>project</b>" in html and "mlp_out" in html and "result.top_tokens(n)" in html
    assert len(res.top_tokens(3)) == len(table.groupby(["kind", "layer", "head", "neuron", "through", "direction"], dropna=False))
    assert isinstance(res.plot(), Figure) and isinstance(res.plot("top_tokens"), Figure)
    with pytest.raises(InputError, match="no figure 'x'"):
        res.plot("x")
    summary = res.save(tmp_path)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "projection.parquet"), table)
    assert (tmp_path / "top_tokens.png").stat().st_size > 0 and summary["figures"] == ["top_tokens.png"]
    assert summary["n_rows"] == len(table)


def test_evidence_result_counts_and_save(gqa_model, tmp_path):
    res = geomlens.evidence(gqa_model, _tokens(), layers=[0, 1], n_positions=30, k=5, k_abs=10,
                            n_units=16, n_permutations=99)
    t = res.table
    assert res.p_min == pytest.approx(1 / 100) and res.layers == [0, 1]
    assert res.inputs == {"n_segments": 6, "n_tokens": 72, "source": "texts given"}
    by = res.by_kind().set_index("kind")
    for kind, df in t.groupby("kind"):
        assert by.loc[kind, "value"] == pytest.approx(df["value"].mean())
        assert by.loc[kind, "layers_p_below"] == int((df["p"] < 0.001).sum())
        assert by.loc[kind, "layers_p_min"] == int(np.isclose(df["p"], 0.01).sum())
        assert by.loc[kind, "layers_below_baseline"] == int((df["value"] < df["baseline"]).sum())
    assert "evidence" in res._repr_html_() and "p &lt; 0.001" in res._repr_html_()
    assert isinstance(res.plot(), Figure)
    summary = res.save(tmp_path)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "evidence.csv"), t, check_dtype=False)
    assert (tmp_path / "evidence.png").exists() and summary["p_min"] == pytest.approx(0.01)


def test_stitch_result_summary_plot_save(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(100) % 5
    X = rng.normal(size=(5, 6))[y] * 3 + rng.normal(size=(100, 6))
    E = torch.randn(30, 6, dtype=torch.float64)
    table = pd.DataFrame(stitch_rows({"a": X, "b": X}, {"a": E, "b": E}, y, split_seeds=[0, 1],
                                     n_permutations=19))
    res = StitchResult(table=table, model_a="A", model_b="B", shared_vocab="30 shared tokens")
    entry = res.by_direction["a->b"]["acc_translated"]
    vals = table.loc[table["direction"] == "a->b", "acc_translated"].to_numpy()
    assert entry["mean"] == pytest.approx(vals.mean())
    assert "a->b" in res.headline() and "chance 0.20" in res.headline()
    assert isinstance(res.plot("stitch"), Figure)
    res.save(tmp_path)
    assert len(pd.read_csv(tmp_path / "stitch.csv")) == 4 and (tmp_path / "stitch.png").exists()


def test_alignment_result_layers_plot_save(one_thread, tmp_path):
    a, b = build_model(seed=0), build_model(seed=1)
    res = geomlens.align(a, b, kinds=["mlp_in", "mlp_out"], n_permutations=3, n_neuron_null=2, k=5)
    assert res.figure_names() == ["heatmap", "heatmap_raw"]  # same d_model: the raw baseline ran
    assert set(res.layers["space"]) == {"embedding", "raw"}
    figs = res.plot()
    assert set(figs) == {"heatmap", "heatmap_raw"} and all(isinstance(f, Figure) for f in figs.values())
    assert "mean" in res.layers["kind"].tolist() and "identity_accuracy" in res.headline()
    summary = res.save(tmp_path)
    for name in ("alignment_layers.csv", "alignment_neurons.csv", "alignment_scores.csv",
                 "alignment_heatmap.png", "alignment_heatmap_raw.png"):
        assert (tmp_path / name).exists(), name
    scores = pd.read_csv(tmp_path / "alignment_scores.csv")
    obs = scores[(scores["what"] == "observed") & (scores["space"] == "embedding") & (scores["kind"] == "mean")]
    S = res.alignment.scores["mean"]
    np.testing.assert_allclose(obs.sort_values(["layer_a", "layer_b"])["score"], S.reshape(-1))
    assert set(summary["layer_matching"]) == {"embedding", "raw"}


def test_token_label_escapes_only_what_the_font_cannot_draw():
    from geomlens.projection.figures import _font_codepoints, token_label

    for ch in ("信", "é", "→"):
        label = token_label(f" a{ch}")
        drawable = ord(ch) in _font_codepoints()
        assert (ch in label) == drawable
        assert label == repr(f" a{ch}") if drawable else label == repr(f" a{ch}").replace(ch, ch.encode("unicode_escape").decode())
