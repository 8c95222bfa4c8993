"""Calibrated JSD and the uniform reference on the tiny random model, against independent
float64 / scipy computations."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from geomlens.analysis import AnalyzeConfig, analyze_tokens, summarize, table_markdown
from geomlens.analysis.calibration import calibration_split, recompute_logits
from geomlens.analysis.capture import capture_batch
from geomlens.analysis.sampling import SEED_OFFSETS
from geomlens.errors import InputError
from geomlens.geometry.scores import SCORES, register_score
from geomlens.metrics.stats import bootstrap_ci

LENGTHS = (10, 7, 12, 5, 9, 11, 8, 6)
DOMAINS = ["a", "b"] * 4


def _seqs():
    g = torch.Generator().manual_seed(2)
    return [torch.randint(0, 50, (n,), generator=g) for n in LENGTHS]


def _cfg(**kw):
    base = dict(model="tiny", n_bootstrap=50, controls=False, trajectories=False, batch_size=3,
                calibration_positions=20, calibration_eval_positions=30)
    base.update(kw)
    return AnalyzeConfig(**base)


@pytest.fixture()
def scaled_dot():
    """A score that is exactly 3 × the LM logits for h = ln_final against W_U (b_U = 0)."""
    register_score("dot_x3", lambda parts: 3.0 * parts.dot, help="3 h.e (test)")
    yield "dot_x3"
    SCORES.unregister("dot_x3")


def test_split_is_disjoint_seeded_and_sampled_inside_its_segments():
    lengths = list(range(3, 43))
    cfg = _cfg(calibration_positions=50, calibration_eval_positions=100)
    split = calibration_split(cfg, lengths)
    fit, held = set(split.fit_segments.tolist()), set(split.eval_segments.tolist())
    assert not fit & held and fit | held == set(range(40)) and len(fit) == 10
    starts = np.cumsum([0, *lengths[:-1]])
    seg_of = np.repeat(np.arange(40), lengths)
    assert set(seg_of[split.fit_positions.numpy()]) <= fit
    assert set(seg_of[split.eval_positions.numpy()]) <= held
    assert len(split.fit_positions) == 50 and len(split.eval_positions) == 100
    assert len(set(split.fit_positions.tolist())) == 50  # without replacement
    again = calibration_split(cfg, lengths)
    assert torch.equal(again.fit_positions, split.fit_positions)
    other = calibration_split(_cfg(seed=1, calibration_positions=50), lengths)
    assert set(other.fit_segments.tolist()) != fit
    exact = calibration_split(_cfg(calibration_positions=None, calibration_eval_positions=None),
                              lengths)
    assert len(exact.fit_positions) + len(exact.eval_positions) == sum(lengths)
    assert starts[0] == 0 and SEED_OFFSETS["calibration"] != SEED_OFFSETS["spearman"]
    assert calibration_split(cfg, [5]) is None


@pytest.mark.parametrize("bad", [dict(calibration_fraction=0.0), dict(calibration_fraction=1.0),
                                 dict(calibration_positions=0), dict(calibration_eval_positions=0)])
def test_config_validation(bad):
    with pytest.raises(InputError):
        _cfg(**bad)


@pytest.mark.parametrize("softcap", [-1.0, 2.0])
@torch.no_grad()
def test_recomputed_logits_are_the_forward_logits(softcap):
    from helpers import build_model

    model = build_model(output_logits_soft_cap=softcap)
    tokens = torch.stack([s[:5] for s in _seqs()[4:6]])
    batch = capture_batch(model, tokens, torch.tensor([5, 5]), ["ln_final", "resid_post"])
    torch.testing.assert_close(recompute_logits(model, batch.hidden["ln_final"]),
                               batch.logits.float(), atol=1e-5, rtol=1e-5)
    from geomlens.analysis.calibration import _unembed_in

    torch.testing.assert_close(_unembed_in(model, {"resid_post": batch.hidden["resid_post"]}),
                               batch.hidden["ln_final"], atol=1e-5, rtol=1e-5)


@pytest.fixture()
def run(tiny_model, scaled_dot):
    cfg = _cfg(scores=["neg_dist", "neg_sq_dist", "inv_dist", "dot", scaled_dot])
    result = analyze_tokens(tiny_model, _seqs(), cfg, domains=DOMAINS)
    return cfg, result, summarize(result, cfg, model_info={"name": "tiny"})


@torch.no_grad()
def _forward(model, seqs):
    """float64 p, ln_final and (seq, pos) of every position, straight from the model."""
    ps, hs, where = [], [], []
    for i, seq in enumerate(seqs):
        logits, cache = model.run_with_cache(seq[None])
        ps.append(torch.softmax(logits[0].double(), -1))
        hs.append(cache["unembed.hook_in"][0].double())
        where += [i] * len(seq)
    return torch.cat(ps), torch.cat(hs), np.array(where)


def test_every_record_is_calibrated_and_matches_an_independent_computation(tiny_model, run):
    cfg, result, summary = run
    results = summary["results"]
    assert [r["score"] for r in results].count("uniform") == 1
    for r in results:
        assert "jsd_calibrated" in r["overall"] and "calibration" in r
        assert (r["temperature"] is None) == (r["score"] == "uniform")
    # recompute neg_sq_dist's calibrated JSD: float64 distances, scipy's JSD, the same split
    p, h, seq = _forward(tiny_model, _seqs())
    split = calibration_split(cfg, LENGTHS)
    rec = next(r for r in results if r["hidden"] == "ln_final" and r["target"] == "W_E"
               and r["score"] == "neg_sq_dist")
    s = -torch.cdist(h, tiny_model.W_E.detach().double()) ** 2
    rows = split.eval_positions.numpy()
    q = torch.softmax(s[rows] / rec["temperature"], -1)
    jsd = np.array([jensenshannon(p[i].numpy(), q[j].numpy(), base=math.e) ** 2
                    for j, i in enumerate(rows)])
    per_seg = [jsd[seq[rows] == k].mean() for k in np.unique(seq[rows])]
    mean, lo, hi = bootstrap_ci(np.array(per_seg), n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    got = rec["overall"]["jsd_calibrated"]
    assert got["mean"] == pytest.approx(mean, abs=2e-6)
    assert got["ci_low"] == pytest.approx(lo, abs=2e-6) and got["ci_high"] == pytest.approx(hi, abs=2e-6)
    n_fit_all = sum(LENGTHS[i] for i in split.fit_segments.tolist())
    assert rec["calibration"]["n_eval_positions"] == 30
    assert rec["calibration"]["n_fit_positions"] == min(20, n_fit_all)  # all when fewer
    # the fitted τ minimises the fit objective: it is no worse than the raw JSD (τ = 1)
    fit_rows = split.fit_positions.numpy()
    raw = np.mean([jensenshannon(p[i].numpy(), torch.softmax(s[i], -1).numpy(), base=math.e) ** 2
                   for i in fit_rows])
    assert rec["calibration"]["fit_jsd"] <= raw + 1e-6


def test_scaled_logits_recover_their_temperature(run):
    _, _, summary = run
    by = {(r["hidden"], r["target"], r["score"]): r for r in summary["results"]}
    for score, c in (("dot", 1.0), ("dot_x3", 3.0)):
        rec = by[("ln_final", "W_U", score)]
        assert rec["temperature"] == pytest.approx(c, rel=2e-2)
        assert rec["overall"]["jsd_calibrated"]["mean"] < 1e-5


def test_uniform_record_equals_the_direct_formula(tiny_model, run):
    cfg, result, summary = run
    uni = next(r for r in summary["results"] if r["score"] == "uniform")
    assert uni["hidden"] is None and uni["target"] is None and uni["temperature"] is None
    p, _, seq = _forward(tiny_model, _seqs())
    vocab = p.shape[-1]
    # JSD(p || u) = ½ Σ p ln p − ½ ln V − Σ m ln m, m = (p + 1/V)/2
    m = (p + 1 / vocab) / 2
    direct = (0.5 * (p * p.log()).sum(-1) - 0.5 * math.log(vocab) - (m * m.log()).sum(-1)).numpy()
    per_seg = np.array([direct[seq == k].mean() for k in range(len(LENGTHS))])
    mean, lo, hi = bootstrap_ci(per_seg, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    assert uni["overall"]["jsd"]["mean"] == pytest.approx(mean, abs=2e-6)
    assert uni["overall"]["jsd"]["ci_low"] == pytest.approx(lo, abs=2e-6)
    assert uni["n_segments"] == len(LENGTHS) and set(uni["per_domain"]) == {"a", "b"}
    rows = calibration_split(cfg, LENGTHS).eval_positions.numpy()
    per_eval = [direct[rows][seq[rows] == k].mean() for k in np.unique(seq[rows])]
    assert uni["overall"]["jsd_calibrated"]["mean"] == pytest.approx(np.mean(per_eval), abs=2e-6)


def test_definitions_table_and_headline(run, tmp_path):
    from geomlens.analysis.command import headline

    _, _, summary = run
    defs = summary["definitions"]
    for key in ("temperature", "jsd_calibrated", "uniform", "calibration_split", "calibration_sample"):
        assert key in defs
    md = table_markdown(summary)
    assert "jsd_calibrated" in md.splitlines()[0] and "| uniform |" in md
    text = headline({**summary, "info": {**summary["info"], "ndcg_full_error_bound_max": 0.0}},
                    tmp_path)
    assert "JSD calibrated" in text and "JSD(p || uniform) = " in text


def test_calibrate_off_and_single_segment(tiny_model, tmp_path):
    from geomlens.analysis.command import headline

    cfg = _cfg(calibrate=False, scores=["neg_dist", "dot"])
    result = analyze_tokens(tiny_model, _seqs(), cfg)
    assert result.calibration is None
    summary = summarize(result, cfg)
    assert all(r["temperature"] is None and "jsd_calibrated" not in r["overall"]
               for r in summary["results"])
    assert "uniform" not in {r["score"] for r in summary["results"]}
    assert "jsd_calibrated" not in table_markdown(summary)
    text = headline(summary, tmp_path)
    assert "JSD calibrated" in text and "–" in text  # the column is there, empty
    cfg = _cfg(scores=["dot"], hidden=["resid_post"])
    one = summarize(analyze_tokens(tiny_model, _seqs()[:1], cfg), cfg)
    uni = one["results"][-1]
    assert uni["score"] == "uniform" and "jsd" in uni["overall"]
    assert "skipped" in uni["calibration"] and "not computed" in headline(one, tmp_path)


def test_summary_readers_cope_with_the_uniform_record(run, tmp_path, monkeypatch):
    """`geomlens.runner.report` and experiments/results/make_table61.py read the new summary."""
    import importlib.util
    import json
    from dataclasses import asdict
    from pathlib import Path

    from geomlens.rundir import mark_done
    from geomlens.runner.report import aggregate, collect_runs

    cfg, _, summary = run
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({**summary, "tied_embeddings": False}))
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg)))
    (run_dir / "env.json").write_text(json.dumps({"argv": ["geomlens", "analyze"]}))
    mark_done(run_dir)  # the report reads finished runs only
    rows = collect_runs([run_dir], explode="results")
    table = aggregate(rows, group_by=["hidden", "target", "score"],
                      metrics=["overall.jsd_calibrated", "temperature"])
    uni = table[table.score == "uniform"].iloc[0]
    assert uni["overall.jsd_calibrated.mean"] > 0 and np.isnan(uni["temperature.mean"])
    x3 = table[(table.score == "dot_x3") & (table.hidden == "ln_final") & (table.target == "W_U")]
    assert x3["temperature.mean"].item() == pytest.approx(3.0, rel=2e-2)

    path = Path(__file__).parents[3] / "experiments" / "results" / "make_table61.py"
    spec = importlib.util.spec_from_file_location("make_table61", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "results"
    out.mkdir()
    for name, value in {"HERE": out, "ROOT": tmp_path, "COPIES": out / "copies",
                        "RUNS": {"tiny": "runs/tiny"}, "GROUPS": {"tiny model": ("tiny",)}}.items():
        monkeypatch.setattr(module, name, value)
    module.main(["--collect"])
    grid = pd.read_csv(out / "table61_full.csv")
    assert set(grid.score) >= {"uniform", "dot_x3"} and "jsd_calibrated" in grid.columns
    assert grid[grid.score == "uniform"].temperature.isna().all()
    text = (out / "table61.md").read_text()
    assert "tiny model: JSD(p ‖ uniform) = " in text and "JSD calibrated" in text
