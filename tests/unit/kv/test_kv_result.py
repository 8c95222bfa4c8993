"""Text in for the first-layer K/V evaluations, and `KVResult`: HTML headline, Figures, and
`save` writing exactly what ``geomlens kv`` writes."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CharTokenizer, text_model

import geomlens
from geomlens.cli import main
from geomlens.errors import InputError
from geomlens.kv import KVConfig, KVResult, LayerMap, decode, loss_rows, segment_losses

TEXTS = ["the cat sat on the mat", "a dog ran far away", "one two three four", "hello world again"]
SMALL = dict(n_bootstrap=50, batch_size=3)


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
    m = text_model(n_layers=4)
    assert m.cfg.n_layers == 4 and m.cfg.n_key_value_heads == 2
    return m


@pytest.fixture(scope="module")
def result(model):
    return geomlens.kv_losses(model, TEXTS, sweep=True, **SMALL)


def test_segment_losses_text_in_equals_token_in(model):
    lm = LayerMap.parse("all", 4)
    by_text = segment_losses(model, TEXTS, layer_map=lm, mode="prev", batch_size=3)
    by_ids = segment_losses(model, [ids(t) for t in TEXTS], layer_map=lm, mode="prev", batch_size=3)
    np.testing.assert_array_equal(by_text[0], by_ids[0])
    assert by_text[1].tolist() == [len(t) - 1 for t in TEXTS]
    one = segment_losses(model, TEXTS[0])
    np.testing.assert_array_equal(one[0], segment_losses(model, ids(TEXTS[0]))[0])


def test_decode_text_in_equals_token_in(model):
    lm = LayerMap.parse("all", 4)
    by_text = decode(model, "the cat", lm, max_new_tokens=3)
    by_ids = decode(model, ids("the cat")[None], lm, max_new_tokens=3)
    assert torch.equal(by_text.tokens, by_ids.tokens)
    torch.testing.assert_close(by_text.logits, by_ids.logits, rtol=0, atol=0)
    both = decode(model, ["the cat", "a dog!!"], lm, max_new_tokens=2)  # 7 characters each
    assert both.tokens.shape == (2, 9)
    with pytest.raises(InputError, match="equal length"):
        decode(model, ["the cat", "a dog"], lm)


def test_kv_losses_text_in_equals_token_in(model, result):
    by_ids = geomlens.kv_losses(model, texts=[ids(t) for t in TEXTS], sweep=True, **SMALL)
    for name in ("per_segment", "losses", "sweep_layer", "sweep_ge_m"):
        pd.testing.assert_frame_equal(getattr(by_ids, name), getattr(result, name))
    assert result.per_segment.domain.tolist() == ["text"] * 4
    assert result.per_segment.segment_id.tolist() == ["0", "1", "2", "3"]


def test_losses_against_a_direct_formula(model, result):
    clean, counts = segment_losses(model, TEXTS)
    patched, _ = segment_losses(model, TEXTS, layer_map=LayerMap.parse("all", 4))
    ref = loss_rows(clean, patched, counts, ["text"] * 4, n_bootstrap=50, seed=0)
    pd.testing.assert_frame_equal(result.losses, ref)
    row = result.overall
    assert row.clean_loss == pytest.approx(clean.sum() / counts.sum())
    assert row.delta_loss == pytest.approx(row.patched_loss - row.clean_loss)
    assert len(result.sweep_layer) == 3 and result.sweep_ge_m.m.tolist() == [1, 2, 3]
    # layers >= 1 share = every layer shares: the m=1 point is the "all" map
    assert result.sweep_ge_m.patched_loss.iloc[0] == pytest.approx(row.patched_loss)


def test_summary_needs_nothing_asked_again(model, result):
    s = result.summary
    assert s["model"] == geomlens.model_info(model)["name"] and s["n_layers"] == 4
    assert s["layer_types"] == "0_0_0_0" and s["n_segments"] == 4 and s["mode"] == "all"
    assert s["n_predicted_tokens"] == sum(len(t) - 1 for t in TEXTS)
    assert s["cache_reduction"] == 4 and s["cache_bytes_per_token_standard"] == 2 * 4 * 2 * 8 * 4
    top = result.sweep_layer.sort_values("delta_loss", ascending=False)
    assert [d["layer"] for d in s["most_sensitive_layers"]] == top.layer.head(3).tolist()
    assert set(s["ge_m_endpoints"]) == {"m=1", "m=3"}
    json.dumps(s)


def test_html_repr_is_the_headline(result):
    page = result._repr_html_()
    row = result.overall
    for key in ("clean_loss", "patched_loss", "delta_loss", "delta_loss_low", "delta_loss_high"):
        assert f"{row[key]:.4f}" in page, key
    assert "4 segment(s)" in page and "0_0_0_0" in page and "result.sweep_layer" in page
    assert "most sensitive layers" in page
    assert repr(result).startswith("KVResult(")


def test_plot_returns_figures_and_writes_nothing(model, result, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    figs = result.plot()
    assert list(figs) == ["losses_by_domain", "layer_sensitivity", "ge_m_curve"]
    assert all(isinstance(f, plt.Figure) for f in figs.values())
    curve = result.plot("ge_m_curve").axes[0]
    np.testing.assert_allclose(curve.lines[0].get_ydata(), result.sweep_ge_m.patched_loss)
    assert list(tmp_path.iterdir()) == []
    plain = geomlens.kv_losses(model, TEXTS[:2], n_bootstrap=20)
    assert plain.figure_names() == ["losses_by_domain"] and plain.sweep_layer is None
    with pytest.raises(InputError, match="no figure"):
        plain.plot("ge_m_curve")
    plt.close("all")


def test_bad_input_is_one_line_error(model):
    with pytest.raises(InputError, match="at least 2 tokens"):
        geomlens.kv_losses(model, ["ok text", "x"])
    with pytest.raises(InputError, match="above their consumers"):
        geomlens.kv_losses(model, TEXTS, layers="lckv")
    with pytest.raises(InputError, match="empty"):
        geomlens.kv_losses(model, ["", "text"])


def test_save_equals_what_the_cli_writes(model, tmp_path, monkeypatch):
    texts = tmp_path / "t.jsonl"
    texts.write_text("".join(json.dumps({"text": t, "domain": d}) + "\n"
                             for t, d in zip(TEXTS, ["a", "b", "a", "b"])))
    monkeypatch.setattr("geomlens.kv.command.load_model", lambda name, device=None: model)
    cli = tmp_path / "cli"
    args = ["--texts", str(texts), "--sweep", "--max-tokens", "16", "--n-bootstrap", "50",
            "--batch-size", "3", "--layers", ">=2", "--mode", "prev"]
    assert main(["kv", *args, "--out", str(cli)]) == 0
    cfg = KVConfig(layers=">=2", mode="prev", sweep=True, n_bootstrap=50, batch_size=3)
    res = geomlens.kv_losses(model, cfg, texts=texts, max_tokens=16)
    assert isinstance(res, KVResult) and res.per_segment.domain.tolist() == ["a", "b", "a", "b"]
    nb = tmp_path / "nb"
    summary = res.save(nb)
    files = sorted(p.relative_to(cli).as_posix() for p in cli.rglob("*") if p.is_file())
    written = sorted(p.relative_to(nb).as_posix() for p in nb.rglob("*") if p.is_file())
    assert [f for f in files if f not in ("config.json", "env.json", "summary.json", "done")] == written
    for name in written:
        assert (cli / name).read_bytes() == (nb / name).read_bytes(), name
    on_disk = json.loads((cli / "summary.json").read_text())
    mine = json.loads(json.dumps(summary))
    assert on_disk.pop("wall_time_s") > 0 and mine.pop("wall_time_s") > 0  # timings differ
    assert on_disk == mine
    assert summary["figures"] == ["figures/losses_by_domain.png", "figures/layer_sensitivity.png",
                                  "figures/ge_m_curve.png"]
