"""`TrainingResult`: headline numbers equal the summary, Figures without files, the nearest /
probable table against a direct computation, Spearman against scipy, and ``geomlens train``
writing the same figures that ``save`` writes."""

from __future__ import annotations

import html
import json
import math
import os

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from helpers import build_cfg, token_stream
from scipy.stats import spearmanr

from geomlens.cli import main
from geomlens.data.token_map import token_map
from geomlens.errors import InputError
from geomlens.training import TrainConfig, Trainer, TrainingResult
from geomlens.training.result import sigma_count_spearman

pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(run_dir, head: str) -> Trainer:
    cfg = TrainConfig(model="tiny", head=head, steps=4, batch_size=2, seq_len=16, lr=1e-2, warmup=1,
                      eval_every=2, eval_tokens=64, log_every=1, device="cpu", seed=0)
    trainer = Trainer(cfg, run_dir, model_cfg=build_cfg(d_vocab=50, seed=0), stream=token_stream())
    trainer.train()
    assert trainer.model.cfg.d_vocab == 50 and trainer.step == 4
    return trainer


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    return _trainer(tmp_path_factory.mktemp("hybrid"), "hybrid")


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    return _trainer(tmp_path_factory.mktemp("linear"), "linear")


def test_html_headline_holds_the_summary_numbers(hybrid):
    result = hybrid.result()
    s = result.summary
    assert s["val_loss"] == hybrid.metrics[-1]["val_loss"]
    assert s["val_perplexity"] == pytest.approx(math.exp(s["val_loss"]))
    assert s["head_params"] == hybrid.model.unembed.n_params()
    assert s["total_params"] == sum(p.numel() for p in hybrid.model.parameters())
    page = html.unescape(result._repr_html_())
    for text in (f"val loss {s['val_loss']:.4f}", f"perplexity {s['val_perplexity']:.2f}",
                 f"accuracy {s['val_accuracy']:.4f}", f"{s['head_params']:,} head params",
                 f"{s['total_params']:,} in all", "head <code>hybrid</code>",
                 f"Spearman(σ_v, training count) = {result.sigma_spearman:+.3f}"):
        assert text in page, text
    assert result.headline() in repr(result)


def test_metrics_frame_is_the_logged_rows(hybrid):
    result = hybrid.result()
    expected = pd.read_csv(hybrid.run_dir / "metrics.csv")
    pd.testing.assert_frame_equal(result.metrics, expected, check_dtype=False)
    assert result.metrics["val_loss"].notna().sum() == 3  # steps 0, 2, 4


def test_plot_returns_figures_and_writes_nothing(hybrid, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = hybrid.result()
    before = sorted(os.listdir(hybrid.run_dir))
    loss = result.plot("loss")
    assert isinstance(loss, plt.Figure)
    ax = loss.axes[0]
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [1, 2, 3, 4]  # step 0 has no training loss yet
    assert list(line.get_ydata()) == pytest.approx(list(result.metrics["train_loss"][1:]))
    points = ax.collections[0].get_offsets()
    assert points[:, 0].tolist() == [0, 2, 4]
    assert points[:, 1].tolist() == pytest.approx(list(result.metrics["val_loss"].dropna()))
    both = result.plot()
    assert set(both) == {"loss", "sigma_vs_frequency"}
    assert f"{result.sigma_spearman:+.3f}" in both["sigma_vs_frequency"].axes[0].get_title()
    assert sorted(os.listdir(hybrid.run_dir)) == before and os.listdir(tmp_path) == []
    plt.close("all")


def test_spearman_equals_scipy(hybrid):
    result = hybrid.result()
    sigma, counts = hybrid.model.unembed.sigma().detach(), torch.bincount(hybrid.data.train, minlength=50)
    assert torch.equal(result.sigma, sigma) and torch.equal(result.counts, counts)
    expected = spearmanr(sigma.numpy(), counts.numpy()).statistic
    assert result.sigma_spearman == pytest.approx(expected, abs=1e-6)
    ties = torch.tensor([3, 1, 1, 0, 5, 5, 5, 2])  # counts tie often: average ranks, as scipy
    values = torch.tensor([0.3, 0.1, 0.2, 0.05, 0.9, 0.7, 0.8, 0.25])
    assert sigma_count_spearman(values, ties) == pytest.approx(spearmanr(values, ties).statistic, abs=1e-6)


def test_nearest_vs_probable_equals_direct_computation(hybrid):
    result = hybrid.result()
    context = hybrid.val_x[0, :12]
    table = result.nearest_vs_probable(context, n=5)
    assert list(table.columns) == ["nearest_token", "nearest_token_id", "distance", "probable_token",
                                   "probable_token_id", "p"]
    model = result.trained_model()
    with torch.no_grad():
        logits, cache = hybrid.model.run_with_cache(context[None])
    h = cache["unembed.hook_in"][0, -1]
    d = torch.cdist(h[None].double(), model.W_E.detach().double())[0]
    p = torch.softmax(logits[0, -1].double(), dim=-1)
    near, top = d.argsort()[:5], p.argsort(descending=True)[:5]
    assert table["nearest_token_id"].tolist() == near.tolist()
    assert table["distance"].to_numpy() == pytest.approx(d[near].numpy(), rel=1e-5)
    assert table["probable_token_id"].tolist() == top.tolist()
    assert table["p"].to_numpy() == pytest.approx(p[top].numpy(), rel=1e-5)
    labels = token_map(model).labels
    assert table["nearest_token"].tolist() == labels(near) and table["probable_token"].tolist() == labels(top)
    assert all(isinstance(t, str) for t in table["nearest_token"])
    earlier = result.nearest_vs_probable(context, pos=3, n=2)
    with torch.no_grad():
        p3 = torch.softmax(hybrid.model(context[None])[0, 3].double(), dim=-1)
    assert earlier["probable_token_id"].tolist() == p3.argsort(descending=True)[:2].tolist()


def test_nearest_vs_probable_rejects_bad_input(hybrid):
    result = hybrid.result()
    with pytest.raises(InputError, match="outside the context's 4 tokens"):
        result.nearest_vs_probable(hybrid.val_x[0, :4], pos=4)
    with pytest.raises(InputError, match="one context, not 2"):
        result.nearest_vs_probable(hybrid.val_x[:2, :4])


def test_unknown_plot_name_lists_the_valid_names(hybrid, linear):
    with pytest.raises(InputError) as err:
        hybrid.result().plot("curve")
    assert "\n" not in str(err.value) and "['loss', 'sigma_vs_frequency']" in str(err.value)
    plain = linear.result()  # a linear head has no σ_v: no σ figure and no Spearman line
    assert plain.figure_names() == ["loss"] and plain.sigma is None
    with pytest.raises(InputError, match=r"'sigma_vs_frequency'.*\['loss'\]"):
        plain.plot("sigma_vs_frequency")
    assert "Spearman" not in plain._repr_html_()


def test_save_writes_the_run_files_elsewhere(hybrid, tmp_path):
    result = hybrid.result()
    summary = result.save(tmp_path / "copy")
    assert summary["figures"] == ["figures/loss.png", "figures/sigma_vs_frequency.png"]
    assert summary["sigma_count_spearman"] == result.sigma_spearman
    for name in ("metrics.csv", "kernel.pt", *summary["figures"]):
        assert (tmp_path / "copy" / name).is_file(), name
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "copy" / "metrics.csv"), result.metrics,
                                  check_dtype=False)
    kernel = torch.load(tmp_path / "copy" / "kernel.pt", weights_only=True)
    assert torch.equal(kernel["sigma"], result.sigma) and torch.equal(kernel["counts"], result.counts)


def test_train_command_writes_what_save_writes_and_load_reads_it(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    stream = torch.randint(0, 49152, (3000,), generator=g)
    monkeypatch.setattr("geomlens.training.loop.load_token_stream", lambda split: stream)
    out = tmp_path / "run"
    assert main(["train", "--model", "micro-1m", "--head", "sigma", "--steps", "2", "--batch-size", "2",
                 "--seq-len", "16", "--eval-every", "2", "--eval-tokens", "64", "--vocab-size", "64",
                 "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["figures"] == ["figures/loss.png", "figures/sigma_vs_frequency.png"]
    assert all((out / f).is_file() for f in summary["figures"])
    loaded = TrainingResult.load(out)
    assert loaded.summary == summary and loaded.cfg.head == "sigma" and len(loaded.sigma) == 64
    assert summary["sigma_count_spearman"] == pytest.approx(
        spearmanr(loaded.sigma.numpy(), loaded.counts.numpy()).statistic, abs=1e-6)
    assert loaded.trained_model().cfg.d_vocab == 64
    with pytest.raises(InputError, match="no summary.json"):
        TrainingResult.load(tmp_path)
