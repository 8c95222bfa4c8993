"""`geomlens report`: collect summaries, aggregate across seeds, render Markdown."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import write_configs
from scipy import stats

from geomlens.cli import main
from geomlens.errors import InputError
from geomlens.runner.report import (
    aggregate,
    bootstrap_ci,
    collect_runs,
    flatten,
    format_table,
    markdown_table,
    varying_keys,
)


def fake_runs(root, rng):
    """12 run dirs: head x seed, with nested summaries and a list-valued config field."""
    rows = []
    for head in ["linear", "tied", "knn"]:
        for seed in range(4):
            run_dir = root / f"head={head},seed={seed}"
            run_dir.mkdir(parents=True)
            loss, ndcg = rng.normal(2.0, 0.3), rng.uniform()
            config = {"seed": seed, "head": head, "model": {"name": "micro-1m"}, "layers": [1, 2]}
            summary = {"loss": loss, "ndcg": {"k10": ndcg}, "ok": True, "curve": [1.0, 2.0], "name": "x",
                       "seed": seed}
            if head == "knn" and seed == 3:
                del summary["ndcg"]  # a missing metric
            (run_dir / "config.json").write_text(json.dumps(config))
            (run_dir / "summary.json").write_text(json.dumps(summary))
            rows.append({"head": head, "seed": seed, "loss": loss, "ndcg.k10": summary.get("ndcg", {}).get("k10")})
    return pd.DataFrame(rows)


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [2]}}, "e": 3}) == {"a.b": 1, "a.c.d": [2], "e": 3}


def test_aggregate_matches_direct_pandas(tmp_path):
    truth = fake_runs(tmp_path / "runs", np.random.default_rng(0))
    runs = collect_runs([tmp_path / "runs"])
    assert len(runs) == 12 and "config.model.name" in runs.columns and "ndcg.k10" in runs.columns
    assert varying_keys(runs) == ["head"]  # seed excluded; constant keys excluded
    table = aggregate(runs)
    assert list(table["head"]) == ["knn", "linear", "tied"]
    assert "ok.mean" not in table.columns and "curve.mean" not in table.columns  # non-numeric
    assert "seed.mean" not in table.columns  # a summary's copy of the seed is not a metric
    direct = truth.groupby("head").agg(["mean", "std", "count"])
    for _, row in table.iterrows():
        for metric in ["loss", "ndcg.k10"]:
            ref = direct.loc[row["head"], metric]
            assert row[f"{metric}.mean"] == pytest.approx(ref["mean"], rel=1e-12)
            assert row[f"{metric}.std"] == pytest.approx(ref["std"], rel=1e-12)  # ddof=1
            assert row[f"{metric}.n"] == ref["count"]
        assert row["n"] == 4
    knn = table[table["head"] == "knn"].iloc[0]
    assert knn["ndcg.k10.n"] == 3
    assert knn["ndcg.k10.mean"] == pytest.approx(np.mean(truth.query("head == 'knn'")["ndcg.k10"].dropna()))


def test_group_by_and_metric_selection(tmp_path):
    truth = fake_runs(tmp_path / "runs", np.random.default_rng(1))
    runs = collect_runs([tmp_path / "runs"])
    by_seed = aggregate(runs, group_by=["seed"], metrics=["loss"])
    assert list(by_seed.columns) == ["seed", "n", "loss.mean", "loss.std", "loss.n"]
    np.testing.assert_allclose(by_seed["loss.mean"], truth.groupby("seed")["loss"].mean().to_numpy())
    everything = aggregate(runs, group_by=[], metrics=["loss"])
    assert len(everything) == 1 and everything["n"].item() == 12
    assert everything["loss.std"].item() == pytest.approx(truth["loss"].std(ddof=1))
    with pytest.raises(InputError, match="Unknown --group-by key 'hed'"):
        aggregate(runs, group_by=["hed"])
    with pytest.raises(InputError, match="Unknown metric"):
        aggregate(runs, metrics=["los"])


def test_bootstrap_ci_against_scipy():
    values = np.random.default_rng(2).normal(size=40)
    low, high = bootstrap_ci(values, n_boot=20_000, confidence=0.9, seed=0)
    ref = stats.bootstrap((values,), np.mean, n_resamples=20_000, confidence_level=0.9,
                          method="percentile", random_state=0).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.02) and high == pytest.approx(ref.high, abs=0.02)
    assert low < values.mean() < high
    assert bootstrap_ci(values, seed=5) == bootstrap_ci(values, seed=5)
    narrow = bootstrap_ci(values, confidence=0.5)
    assert low < narrow[0] < narrow[1] < high
    assert all(np.isnan(bootstrap_ci(np.array([1.0]))))


def test_markdown_rendering():
    table = pd.DataFrame({"head": ["a|b", "c"], "n": [3, 1], "loss.mean": [1.23456, 2.0],
                          "loss.std": [0.5, float("nan")], "loss.n": [3, 1]})
    formatted = format_table(table, digits=2)
    assert list(formatted.columns) == ["head", "n", "loss"]
    assert list(formatted["loss"]) == ["1.23 ± 0.50", "2.00"]
    text = markdown_table(formatted)
    lines = text.strip().split("\n")
    assert len(lines) == 4
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    assert cells[0] == ["head", "n", "loss"]
    assert cells[2] == ["a\\|b", "3", "1.23 ± 0.50"] and cells[3] == ["c", "1", "2.00"]
    assert set(cells[1][0]) == {"-"} and cells[1][1].endswith(":")  # numbers right-aligned
    assert len({len(line) for line in lines}) == 1  # columns padded to equal width


def test_report_cli_end_to_end(tmp_path, capsys):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", sweep="  mode: [sgd, sign]\n  seed: [0, 1, 2]\n")
    assert main(["run", str(cfg)]) == 0
    capsys.readouterr()
    out_csv, out_pq, out_md = tmp_path / "t.csv", tmp_path / "t.parquet", tmp_path / "t.md"
    assert main(["report", str(tmp_path / "runs"), "--out", str(out_csv), "--markdown", str(out_md)]) == 0
    printed = capsys.readouterr().out
    assert out_md.read_text() == printed
    table = pd.read_csv(out_csv)
    assert list(table["mode"]) == ["sgd", "sign"] and list(table["n"]) == [3, 3]
    summaries = {
        (mode, seed): json.loads((tmp_path / "runs" / f"mode={mode},seed={seed}" / "summary.json").read_text())
        for mode in ["sgd", "sign"] for seed in range(3)
    }
    for _, row in table.iterrows():
        losses = [summaries[(row["mode"], s)]["loss"] for s in range(3)]
        assert row["loss.mean"] == pytest.approx(np.mean(losses))
        assert row["loss.std"] == pytest.approx(np.std(losses, ddof=1))
        norms = [summaries[(row["mode"], s)]["weights"]["norm"] for s in range(3)]
        assert row["weights.norm.mean"] == pytest.approx(np.mean(norms))
    assert f"{table['loss.mean'][0]:.3f} ± {table['loss.std'][0]:.3f}" in printed
    assert main(["report", str(tmp_path / "runs"), "--out", str(out_pq), "--interval", "bootstrap",
                 "--metrics", "loss", "--group-by", "mode"]) == 0
    boot = pd.read_parquet(out_pq)
    assert list(boot.columns) == ["mode", "n", "loss.mean", "loss.std", "loss.n", "loss.ci_low", "loss.ci_high"]
    assert (boot["loss.ci_low"] <= boot["loss.mean"]).all() and (boot["loss.mean"] <= boot["loss.ci_high"]).all()


def test_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "No summary.json" in capsys.readouterr().err


def test_explode_records_and_within_run_intervals(tmp_path):
    """`--explode results`: one row per record; a single run keeps its own CI, several runs give
    mean ± std of their means (checked against numpy)."""
    import json as _json

    import numpy as _np

    from geomlens.runner.report import aggregate, collect_runs, format_table

    def write(run, seed, values):
        d = tmp_path / run
        d.mkdir()
        (d / "config.json").write_text(_json.dumps({"model": "m", "seed": seed}))
        recs = [{"score": s, "overall": {"ndcg": {"mean": v, "ci_low": v - 0.1, "ci_high": v + 0.1}}}
                for s, v in values.items()]
        (d / "summary.json").write_text(_json.dumps({"results": recs, "other": 1}))

    write("a", 0, {"dot": 0.9, "neg_dist": 0.5})
    runs = collect_runs([tmp_path / "a"], explode="results")
    assert len(runs) == 2 and set(runs["score"]) == {"dot", "neg_dist"} and "other" not in runs
    one = aggregate(runs, group_by=["score"], metrics=["overall.ndcg"])
    row = one.set_index("score").loc["neg_dist"]
    assert row["overall.ndcg.mean"] == 0.5 and _np.isclose(row["overall.ndcg.ci_low"], 0.4)
    assert format_table(one).set_index("score").loc["neg_dist", "overall.ndcg"] == "0.500 [0.400, 0.600]"

    write("b", 1, {"dot": 0.7, "neg_dist": 0.6})
    both = aggregate(collect_runs([tmp_path], explode="results"), group_by=["score"],
                     metrics=["overall.ndcg"]).set_index("score")
    assert _np.isclose(both.loc["dot", "overall.ndcg.mean"], _np.mean([0.9, 0.7]))
    assert _np.isclose(both.loc["dot", "overall.ndcg.std"], _np.std([0.9, 0.7], ddof=1))
    with pytest.raises(Exception, match="no list"):
        collect_runs([tmp_path / "a"], explode="missing")


def test_report_skips_failed_unfinished_and_corrupt_runs_naming_each(tmp_path, capsys, caplog):
    import logging

    def run(name, summary, marker, env=True):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"seed": int(name[-1])}))
        (d / "summary.json").write_text(summary)
        if env:
            (d / "env.json").write_text("{}")
        if marker:
            (d / marker).write_text("2026\nsome error\n")

    run("ok0", '{"loss": 1.0}', "done")
    run("ok1", '{"loss": 3.0}', "done")
    run("failed2", '{"loss": 99.0}', "failed")
    run("unfinished3", '{"loss": 99.0}', None)
    run("corrupt4", '{"loss": ', "done")
    out = tmp_path / "table.csv"
    with caplog.at_level(logging.WARNING):
        assert main(["report", str(tmp_path / "runs"), "--out", str(out)]) == 0
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 3 and all(len(m.splitlines()) == 1 for m in skipped)
    for name in ("failed2", "unfinished3", "corrupt4"):
        assert sum(name in m for m in skipped) == 1
    table = pd.read_csv(out)
    assert table["n"].tolist() == [2] and table["loss.mean"].tolist() == [2.0]


@pytest.mark.parametrize("flag,value", [("--out", "t.txt"), ("--out", "adir"), ("--runs", "adir"),
                                        ("--markdown", "adir"), ("--markdown", "afile/x.md"),
                                        ("--n-boot", "0"), ("--confidence", "1.5")])
def test_report_checks_its_outputs_before_reading(tmp_path, capsys, flag, value):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    target = value if flag in ("--n-boot", "--confidence") else str(tmp_path / value)
    assert main(["report", str(tmp_path / "nothing-here"), flag, target]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing-here" not in err[0]
