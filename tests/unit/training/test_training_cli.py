"""`geomlens train`: outputs, no-overwrite, --resume (random tokens instead of the corpus)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from geomlens.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _random_corpus(monkeypatch):
    """Replace the bundled corpus by a random SmolLM2-id stream (no tokenizer needed)."""
    g = torch.Generator().manual_seed(0)
    stream = torch.randint(0, 49152, (3000,), generator=g)
    monkeypatch.setattr("geomlens.training.loop.load_token_stream", lambda split: stream)


def _args(out, *extra):
    return ["train", "--model", "micro-1m", "--head", "sigma", "--steps", "4", "--batch-size", "2",
            "--seq-len", "16", "--eval-every", "2", "--eval-tokens", "64", "--vocab-size", "64",
            "--log-every", "1", "--checkpoint-every", "2", "--device", "cpu", "--out", str(out), *extra]


def test_train_writes_run_dir_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(out)) == 0
    for name in ("config.json", "env.json", "metrics.csv", "summary.json", "done", "kernel.pt",
                 "model.safetensors", "model.json"):
        assert (out / name).exists(), name
    vocabulary = json.loads((out / "model.json").read_text())["vocabulary"]  # was vocab.pt
    assert len(vocabulary["kept"]) == 63 and vocabulary["oov_id"] == 63
    assert (out / "checkpoints" / "latest.pt").exists()
    summary = json.loads((out / "summary.json").read_text())
    for key in ("val_loss", "val_perplexity", "val_accuracy", "head_params", "total_params",
                "tokens_per_s", "device"):
        assert key in summary
    assert summary["head_params"] == 64 and summary["d_vocab"] == 64 and summary["steps"] == 4
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert {"step", "train_loss", "val_loss", "lr", "tokens_per_s"} <= set(rows[0])
    assert float(rows[-1]["val_loss"]) == pytest.approx(summary["val_loss"])

    assert main(_args(out)) == 0  # same --out without --resume: a fresh sibling directory
    assert (tmp_path / "run-2" / "summary.json").exists()
    assert json.loads((out / "summary.json").read_text()) == summary  # first run untouched

    assert main(_args(out, "--resume")) == 0
    assert "already finished" in capsys.readouterr().out


def test_resume_continues_from_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert main(_args(out)) == 0
    first = json.loads((out / "summary.json").read_text())
    (out / "done").unlink()
    assert main(_args(out, "--resume")) == 0  # finds the step-4 checkpoint: nothing left to train
    again = json.loads((out / "summary.json").read_text())
    assert again["val_loss"] == first["val_loss"] and again["steps"] == 4
    env = json.loads((out / "env.json").read_text())
    assert env.get("resumed_from")


def test_resume_with_a_different_config_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(out)) == 0
    (out / "done").unlink()
    args = _args(out, "--resume")
    args[args.index("--steps") + 1] = "6"
    assert main(args) == 2
    assert "differs" in capsys.readouterr().err


def test_bad_input_exits_2(tmp_path, capsys):
    args = _args(tmp_path / "x")
    args[args.index("--head") + 1] = "nope"
    assert main(args) == 2
    assert "unknown head 'nope'" in capsys.readouterr().err
    assert main(_args(tmp_path / "y", "--tokens", "100")) == 2  # --tokens and --steps together
    assert "exactly one of --tokens or --steps" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_train_under_transformerlens_4_names_the_install_in_one_line(tmp_path, capsys, monkeypatch):
    from geomlens import backend

    monkeypatch.setattr(backend, "tl_major", lambda: 4)
    monkeypatch.setattr("importlib.metadata.version", lambda name: "4.3.0")
    out = tmp_path / "run"
    assert main(["train", "--model", "micro-1m", "--steps", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs TransformerLens 3" in err
    assert "pip install 'transformer-lens>=3.9,<4'" in err and not out.exists()
