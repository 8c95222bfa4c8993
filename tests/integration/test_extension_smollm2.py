"""Adding a score is one `register_score` call: the config, the CLI and summary.json pick it up."""

from __future__ import annotations

import json

import pytest

from geomlens.cli import main
from geomlens.geometry.scores import SCORES, register_score

pytestmark = pytest.mark.integration


@pytest.fixture()
def toy_score():
    register_score("neg_l1_dot", lambda parts: -parts.dot.abs(), help="-|h.e| (a toy score)")
    yield "neg_l1_dot"
    SCORES.unregister("neg_l1_dot")


def test_a_registered_score_reaches_config_cli_and_summary(toy_score, tmp_path, capsys, one_thread):
    from geomlens.analysis.config import AnalyzeConfig

    assert toy_score in AnalyzeConfig().scores  # part of the default analysis
    out = tmp_path / "run"
    args = ["analyze", "--model", "smollm2-135m", "--domains", "news", "--n-segments", "1",
            "--max-tokens", "12", "--scores", toy_score, "dot", "--target", "W_E",
            "--hidden", "ln_final", "--no-controls", "--no-trajectories", "--no-spearman", "--no-layer-lens",
            "--n-bootstrap", "20", "--out", str(out)]
    assert main(args) == 0
    assert toy_score in capsys.readouterr().out  # the headline table
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["score"]: r for r in summary["results"]}
    assert set(rows) == {toy_score, "dot", "uniform"}  # + the uniform reference
    assert summary["definitions"]["scores"][toy_score] == "-|h.e| (a toy score)"
    assert 0.0 <= rows[toy_score]["overall"]["ndcg@10"]["mean"] <= 1.0
    assert rows["dot"]["overall"]["top1"]["mean"] == 1.0  # dot with ln_final vs tied W_E = the logits
