"""`AnalysisResult` as a notebook object: text in, HTML headline, Figures, and `save` writing
the run directory's files from the same code the CLI runs."""

import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from helpers import text_model

import geomlens
from geomlens.analysis import summarize
from geomlens.analysis.result import FIGURES
from geomlens.errors import InputError

TEXTS = ["the cat sat on the mat", "a dog ran far away", "one two three four", "hello world again"]
SMALL = dict(n_bootstrap=50, n_permutations=3, control_positions=20, batch_size=4)


@pytest.fixture(scope="module")
def model():
    return text_model()


@pytest.fixture(scope="module")
def result(model):
    return geomlens.analyze(model, texts=TEXTS, trajectories=True, layer_lens=True,
                            layer_lens_positions=None, **SMALL)


def test_texts_are_the_segments(model, result):
    assert result.info["n_segments"] == len(TEXTS)
    assert result.info["n_positions"] == sum(len(t) for t in TEXTS)  # one id per character
    assert sorted(result.per_segment["segment"].unique()) == ["0", "1", "2", "3"]
    same = geomlens.analyze(model, TEXTS, trajectories=True, layer_lens=True,
                            layer_lens_positions=None, **SMALL)
    pd.testing.assert_frame_equal(same.per_segment, result.per_segment)


def test_summary_needs_nothing_asked_again(result):
    assert result.cfg.n_bootstrap == 50 and result.n_layers == 2
    assert result.model_info["name"] == result.summary["model"]["name"]
    plain = summarize(result)
    explicit = summarize(result, result.cfg, model_info=result.model_info, n_layers=result.n_layers)
    assert json.dumps(plain) == json.dumps(explicit)
    assert {k: v for k, v in result.summary.items() if k != "layers"}["results"] == plain["results"]
    assert "layers" in result.summary and "layers" in result.summary["definitions"]


def test_html_repr_is_the_headline(result):
    page = result._repr_html_()
    assert "4 segment(s)" in page and f"{result.info['n_positions']} positions" in page
    row = result.table().iloc[0]
    assert result.summary["model"]["name"] in page
    assert row["ndcg@full"].split(" ")[0] in page or "NDCG@full" in page


def test_plot_returns_figures_and_writes_nothing(result, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    figs = result.plot()
    assert list(figs) == list(FIGURES)
    assert all(isinstance(f, plt.Figure) for f in figs.values())
    assert isinstance(result.plot("layers"), plt.Figure)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="no figure"):
        result.plot("nope")
    plt.close("all")


def test_save_writes_the_run_files(result, tmp_path):
    summary = result.save(tmp_path)
    for name in ("per_segment.csv", "controls.csv", "per_layer.csv", "per_layer_domain.csv",
                 "layers.csv", "table61.md"):
        assert (tmp_path / name).exists(), name
    assert summary["figures"] == [f"figures/{FIGURES[n]}" for n in FIGURES]
    assert all((tmp_path / f).exists() for f in summary["figures"])
    back = pd.read_csv(tmp_path / "per_segment.csv", dtype={"segment": str})
    assert back["ndcg@full"].tolist() == pytest.approx(result.per_segment["ndcg@full"].tolist())
