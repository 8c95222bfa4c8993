"""`geomlens.ablate` and `AblationResult`: text in, HTML headline, Figures, and `save` writing
exactly what ``geomlens ablate`` writes."""

import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from helpers import CharTokenizer, text_model

import geomlens
from geomlens.ablation import ablation_table, sweep_conditions
from geomlens.ablation.result import AblationResult
from geomlens.cli import main
from geomlens.errors import InputError

TEXTS = ["the cat sat on the mat", "a dog ran far away", "one two three four", "hello world again"]


def ids(text):
    return torch.tensor(CharTokenizer()(text)["input_ids"])


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared CPU they only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    return text_model()


@pytest.fixture(scope="module")
def result(model):
    return geomlens.ablate(model, TEXTS, sweep=True, batch_size=2)


def test_text_in_equals_token_in(model, result):
    by_ids = geomlens.ablate(model, texts=[ids(t) for t in TEXTS], sweep=True, batch_size=2)
    pd.testing.assert_frame_equal(by_ids.table, result.table)
    assert by_ids.clean == result.clean
    table, clean = ablation_table(model, [ids(t) for t in TEXTS], sweep_conditions([0, 1]),
                                  method="zero", batch_size=2)
    pd.testing.assert_frame_equal(table, result.table)
    one, _ = ablation_table(model, TEXTS[0], sweep_conditions([0]), method="zero")
    again, _ = ablation_table(model, ids(TEXTS[0]), sweep_conditions([0]), method="zero")
    pd.testing.assert_frame_equal(one, again)
    assert clean["n_sequences"] == 4 and clean["n_tokens"] == sum(len(t) for t in TEXTS)


def test_resample_text_in_drops_a_lone_last_batch(model, caplog):
    res = geomlens.ablate(model, TEXTS[:3], method="resample", batch_size=2, layers=[0])
    assert res.clean["n_sequences"] == 2 and "dropping the last batch" in caplog.text
    with pytest.raises(InputError, match="no batch"):
        geomlens.ablate(model, TEXTS[0], method="resample", batch_size=2)


def test_summary_needs_nothing_asked_again(model, result):
    s = result.summary
    assert s["model"] == geomlens.model_info(model)["name"] and s["method"] == "zero"
    assert s["metric"] == "ndcg@10" and s["n_conditions"] == 4 == len(result.table)
    assert s["n_sequences"] == 4 and s["clean_loss"] == result.clean["loss"]
    worst = result.table.loc[result.table.delta_loss.idxmax()]
    assert s["max_delta_loss"] == {"layer": int(worst.layer), "component": worst.component,
                                   "delta_loss": float(worst.delta_loss)}
    json.dumps(s)  # plain JSON types


def test_html_repr_is_the_headline(result):
    page = result._repr_html_()
    assert page.startswith("<div>") and "4 condition(s)" in page and "4 sequence(s)" in page
    assert f"{result.clean['loss']:.4f}" in page and f"{result.clean['metric']:.4f}" in page
    worst = result.table.delta_loss.max()
    assert f"{worst:+.4f}" in page  # the largest Δloss is listed
    assert "result.table" in page and "delta_loss" in page
    assert repr(result).startswith("AblationResult(4 conditions)")


def test_plot_returns_figures_and_writes_nothing(result, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    figs = result.plot()
    assert list(figs) == ["delta_loss", "delta_metric"]
    assert all(isinstance(f, plt.Figure) for f in figs.values())
    one = result.plot("delta_metric")
    assert isinstance(one, plt.Figure) and one.axes[0].get_title() == "delta_metric"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="no figure"):
        result.plot("loss")
    plt.close("all")


def test_save_equals_what_the_cli_writes(model, tmp_path, monkeypatch):
    texts = tmp_path / "t.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    monkeypatch.setattr("geomlens.ablation.command.load_model", lambda name, device=None: model)
    args = ["--texts", str(texts), "--sweep", "--max-tokens", "16", "--batch-size", "2"]
    assert main(["ablate", *args, "--out", str(tmp_path / "cli")]) == 0
    res = geomlens.ablate(model, texts=texts, sweep=True, max_tokens=16, batch_size=2)
    assert isinstance(res, AblationResult) and res.cfg.texts == str(texts)
    summary = res.save(tmp_path / "nb")
    cli, nb = tmp_path / "cli", tmp_path / "nb"
    for name in ("ablation.csv", "heatmap_delta_loss.png", "heatmap_delta_metric.png"):
        assert (cli / name).read_bytes() == (nb / name).read_bytes(), name
    assert json.loads((cli / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["figures"] == ["heatmap_delta_loss.png", "heatmap_delta_metric.png"]
    back = pd.read_csv(nb / "ablation.csv")
    assert back.delta_loss.tolist() == pytest.approx(res.table.delta_loss.tolist())
