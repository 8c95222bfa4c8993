"""The layer lens's CI table and summary block, and an end-to-end `analyze` run on a tiny model
that writes layers.csv, figures/layers.png and summary["layers"] (or skips them)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import build_model

import geomlens.analysis.command
from geomlens.analysis import AnalyzeConfig
from geomlens.analysis.command import run_analysis
from geomlens.analysis.layer_summary import layers_block, summarize_layer_lens
from geomlens.analysis.layers import layer_ndcg
from geomlens.metrics.stats import bootstrap_ci


@pytest.fixture()
def per_position():
    model = build_model()
    return layer_ndcg(model, torch.randint(0, 50, (6, 8)), positions=30, seed=2, topk=16)


def test_ci_table_contains_the_mean_and_is_the_segment_bootstrap(per_position):
    table = summarize_layer_lens(per_position, n_bootstrap=200, seed=3)
    assert len(table) == 3 * 4 * 4  # (emb + 2 layers) x 4 lenses x 4 metrics
    assert set(table.metric) == {"ndcg@10", "ndcg@full", "top1", "top10"}
    assert (table.ci_low <= table["mean"] + 1e-12).all() and (table["mean"] <= table.ci_high + 1e-12).all()
    assert (table.n_positions == 30).all() and (table.n_segments == per_position.segment.nunique()).all()
    row = table[(table.layer == 0) & (table.lens == "distance_raw") & (table.metric == "ndcg@10")].iloc[0]
    sel = per_position[(per_position.layer == 0) & (per_position.lens == "distance_raw")]
    seg_means = sel.groupby("segment")["ndcg@10"].mean().to_numpy()
    mean, low, high = bootstrap_ci(seg_means, n_bootstrap=200, seed=3)
    assert (row["mean"], row.ci_low, row.ci_high) == pytest.approx((mean, low, high))
    full = table[table.metric == "ndcg@full"]
    assert (full.error_bound_max > 0).all() and (table[table.metric != "ndcg@full"].error_bound_max == 0).all()
    assert list(table.layer.unique()) == [-1, 0, 1]


def test_summary_block(per_position):
    table = summarize_layer_lens(per_position, n_bootstrap=50)
    block = layers_block(table)
    assert block["layers"] == [-1, 0, 1]
    assert block["hooks"] == {"-1": "blocks.0.hook_resid_pre", "0": "blocks.0.hook_resid_post",
                              "1": "blocks.1.hook_resid_post"}
    assert set(block["lenses"]) == {"distance_raw", "distance_ln_final", "distance_ln_final_gain", "logit"}
    logit = block["lenses"]["logit"]["ndcg@10"]
    assert logit["mean"][-1] == pytest.approx(1.0, abs=1e-5) and len(logit["ci_low"]) == 3
    assert block["n_positions"] == 30 and block["ndcg_full_error_bound_max"] > 0
    json.dumps(block)


def _run(monkeypatch, tmp_path, **kw):
    model = build_model()
    model.cfg.model_name = "tiny-test"
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 50, (n,), generator=g) for n in (10, 7, 12, 5)]
    segments = (seqs, [f"s{i}" for i in range(4)], ["a", "b", "a", "b"])
    command = geomlens.analysis.command  # the names run_analysis looks up
    monkeypatch.setattr(command, "load_model", lambda name, device=None: model)
    monkeypatch.setattr(command, "load_model_segments", lambda cfg, tok: segments)
    cfg = AnalyzeConfig(model="tiny", n_bootstrap=50, controls=False, trajectories=False,
                        scores=["dot", "neg_dist"], spearman=False, **kw)
    return run_analysis(cfg, tmp_path)


def test_analyze_run_writes_the_layer_outputs(monkeypatch, tmp_path, one_thread):
    summary = _run(monkeypatch, tmp_path, layer_lens_positions=20)
    table = pd.read_csv(tmp_path / "layers.csv")
    assert {"layer", "hook", "lens", "metric", "mean", "ci_low", "ci_high"} <= set(table.columns)
    assert (table.n_positions == 20).all() and set(table.layer) == {-1, 0, 1}
    assert (tmp_path / "figures" / "layers.png").stat().st_size > 1000
    assert "figures/layers.png" in summary["figures"]
    block = summary["layers"]
    assert block["n_positions"] == 20 and block["n_segments"] <= 4
    last = block["lenses"]["logit"]["ndcg@10"]["mean"][-1]
    assert last == pytest.approx(1.0, abs=1e-5)
    assert "blocks.0.hook_resid_pre" in summary["definitions"]["layers"]
    json.dumps(summary)


def test_layer_lens_off_skips_it(monkeypatch, tmp_path, one_thread):
    summary = _run(monkeypatch, tmp_path, layer_lens=False)
    assert not (tmp_path / "layers.csv").exists() and not (tmp_path / "figures" / "layers.png").exists()
    assert "layers" not in summary and "layers" not in summary["definitions"]
    assert np.isfinite(summary["results"][0]["overall"]["ndcg@10"]["mean"])
