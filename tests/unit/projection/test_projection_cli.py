"""`geomlens evidence` and `geomlens stitch` end to end on two tiny trained runs (micro-1m, a
64-token vocabulary, 4 steps on a random SmolLM2-id stream): the run directory, its files, and
the table's numbers against their definitions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from geomlens.cli import main
from geomlens.projection.evidence import TABLE_COLUMNS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of a tiny micro-1m run with the same kept vocabulary."""
    mp = pytest.MonkeyPatch()
    g = torch.Generator().manual_seed(0)
    stream = torch.randint(0, 200, (3000,), generator=g)  # ids < 200: every id is frequent enough
    mp.setattr("geomlens.training.loop.load_token_stream", lambda split: stream)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cli_runs")
    out = {}
    for seed in (0, 1):
        out[seed] = root / f"seed{seed}"
        assert main(["train", "--model", "micro-1m", "--head", "tied", "--steps", "4",
                     "--batch-size", "2", "--seq-len", "16", "--eval-every", "4", "--eval-tokens", "64",
                     "--vocab-size", "64", "--log-every", "4", "--device", "cpu", "--seed", str(seed),
                     "--out", str(out[seed])]) == 0
    mp.undo()
    torch.set_num_threads(n)
    return out


def test_evidence_command_writes_the_table_figure_and_summary(runs, tmp_path, capsys):
    out = tmp_path / "evidence"
    assert main(["evidence", "--model", str(runs[0]), "--layers", "all", "--n-segments", "2",
                 "--max-tokens", "12", "--n-positions", "30", "--n-units", "16", "--k", "5",
                 "--k-abs", "10", "--n-permutations", "39", "--device", "cpu", "--out", str(out)]) == 0
    for name in ("evidence.csv", "evidence.png", "summary.json", "config.json", "env.json", "done"):
        assert (out / name).exists(), name
    table = pd.read_csv(out / "evidence.csv")
    assert tuple(table.columns) == TABLE_COLUMNS
    n_layers = 5  # micro-1m
    kinds = {"mlp_in", "mlp_gate", "mlp_out", "v", "o", "kv", "vo", "qk"}
    assert set(table["kind"]) == kinds and len(table) == len(kinds) * n_layers
    assert sorted(set(table["layer"])) == list(range(n_layers))
    assert ((table["p"] >= 1 / 40) & (table["p"] <= 1)).all() and (table["n_permutations"] == 39).all()
    assert ((table["ci_low"] <= table["value"] + 1e-12) & (table["value"] <= table["ci_high"] + 1e-12)).all()
    assert ((table["value"] >= 0) & (table["value"] <= 1)).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["p_min"] == pytest.approx(1 / 40) and summary["layers"] == list(range(n_layers))
    by_kind = table.groupby("kind")["value"].mean()
    for kind, entry in summary["by_kind"].items():
        assert entry["value"] == pytest.approx(by_kind[kind])
    assert "evidence.csv" in capsys.readouterr().out


def test_stitch_command_reports_translation_null_and_ceiling(runs, tmp_path):
    out = tmp_path / "stitch"
    assert main(["stitch", "--model-a", str(runs[0]), "--model-b", str(runs[1]), "--n-segments", "6",
                 "--max-tokens", "8", "--split-seeds", "0", "1", "--n-permutations", "19",
                 "--device", "cpu", "--out", str(out)]) == 0
    for name in ("stitch.csv", "summary.json", "config.json", "done"):
        assert (out / name).exists(), name
    table = pd.read_csv(out / "stitch.csv")
    assert len(table) == 4 and set(table["direction"]) == {"a->b", "b->a"}  # 2 splits x 2 directions
    assert (table["n_test"] == 15).all() and np.allclose(table["chance"], 0.2)  # 30 segments, 5 domains
    for key in ("acc_a", "acc_translated", "acc_ceiling"):
        assert ((table[f"{key}_lo"] <= table[key]) & (table[key] <= table[f"{key}_hi"])).all()
        assert np.allclose(table[key] * 15, np.round(table[key] * 15))  # a count of 15 test segments
    assert ((table["p"] >= 1 / 20) & (table["p"] <= 1)).all()
    summary = json.loads((out / "summary.json").read_text())
    for direction, df in table.groupby("direction"):
        assert summary["by_direction"][direction]["acc_translated"]["mean"] == pytest.approx(df["acc_translated"].mean())


def test_evidence_and_stitch_reject_bad_input_before_a_run_dir(runs, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["evidence", "--model", str(runs[0]), "--layers", "7", "--out", str(out)]) == 2
    assert main(["stitch", "--model-a", str(runs[0]), "--out", str(out)]) == 2
    assert main(["evidence", "--model", "no-such-model", "--out", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert "--layers" in err and "--model-b is required" in err
