"""Trained models of run directories are data: safetensors + JSON, loaded without unpickling.

The central test plants a pickle payload (a ``__reduce__`` that creates a marker file) in every
pickle-capable file of a real training run directory and loads it as a model, through
`geomlens.load_model` and through ``geomlens analyze --model RUN_DIR``: nothing runs, and the
model is the trained one. A control shows that the payload is live (a plain ``torch.load``
runs it)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import build_model, train_tiny_run

import geomlens
from geomlens.cli import main
from geomlens.data.token_map import token_map
from geomlens.errors import InputError, LegacyRunError, UnknownModelError
from geomlens.heads import install_head
from geomlens.models.trained import (
    CONFIG_FILE,
    CONVERT_COMMAND,
    FORMAT,
    MODEL_FILE,
    is_trained,
    load_trained,
    save_trained,
)
from geomlens.models.zoo import check_model_name
from geomlens.training.checkpoint import load_checkpoint

PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt"}


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CharTokenizer:
    """One id per character (3 + ord % 47 < 50), no BOS; enough for analyze's segments."""

    bos_token_id = None
    eos_token_id = 2
    padding_side = "right"

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [3 + ord(c) % 47 for c in text]}

    def encode(self, text, add_special_tokens=True):
        return self(text)["input_ids"]

    def decode(self, ids, **kw):
        return "".join(chr(i) for i in ids)


def pickle_capable(run_dir: Path) -> list[Path]:
    """Every file a pickle could hide in: torch's zip format, a raw pickle, or a pickle suffix."""
    found = []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        head = path.read_bytes()[:2]
        if path.suffix in PICKLE_SUFFIXES or zipfile.is_zipfile(path) or head[:1] == b"\x80":
            found.append(path)
    return found


def _same_outputs(a, b) -> None:
    tokens = torch.randint(0, a.cfg.d_vocab, (2, 10), generator=torch.Generator().manual_seed(3))
    a.eval(), b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(tokens), b(tokens), rtol=0, atol=0)


@pytest.mark.parametrize("head", ["linear", "tied", "sigma", "context_mlp"])
def test_save_then_load_gives_the_same_model(tmp_path, head, one_thread):
    model = build_model()
    install_head(model, head, **({"hidden": 8} if head == "context_mlp" else {}))
    save_trained(tmp_path, model, head=head, head_kwargs={"hidden": 8} if head == "context_mlp" else {},
                 provenance={"step": 7, "seed": 0})
    loaded = load_trained(tmp_path, device="cpu", tokenizer=CharTokenizer())
    _same_outputs(loaded, model)
    assert set(loaded.state_dict()) == set(model.state_dict())
    info = loaded.geomlens_info
    assert info["step"] == 7 and info["head"] == head and info["tied_embeddings"] == (head == "tied")
    assert token_map(loaded).kept is None and loaded.tokenizer is not None


def test_model_json_is_plain_data_with_the_kept_ids(tmp_path, one_thread):
    model = build_model(d_vocab=12)
    kept = torch.tensor([17, 3, 40, 5, 9, 11, 20, 21, 22, 30, 31])
    save_trained(tmp_path, model, head="linear", kept=kept, oov_id=11, tokenizer="smollm2-135m")
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["format"] == FORMAT and config["head"] == {"name": "linear", "kwargs": {}}
    assert config["vocabulary"] == {"kept": kept.tolist(), "oov_id": 11}
    assert config["tokenizer"] == {"name": "smollm2-135m"}
    assert config["architecture"]["d_vocab"] == 12 and config["architecture"]["dtype"] == "float32"
    tm = token_map(load_trained(tmp_path, device="cpu", tokenizer=CharTokenizer()))
    assert torch.equal(tm.kept, kept) and tm.oov_id == 11
    assert tm.from_original([40, 99]).tolist() == [2, 11]


def test_bad_trained_files_are_one_line_errors(tmp_path, one_thread):
    save_trained(tmp_path, build_model(), head="linear")
    config = (tmp_path / CONFIG_FILE).read_text()
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(InputError, match="cannot be read as JSON"):
        load_trained(tmp_path, tokenizer=CharTokenizer())
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**json.loads(config), "format": "other/9"}))
    with pytest.raises(InputError, match="not a geomlens trained-model config"):
        load_trained(tmp_path, tokenizer=CharTokenizer())
    for bad, match in ((dict(head={"name": "linear", "kwargs": {"nope": 1}}), "Bad keyword arguments"),
                       (dict(architecture={"d_model": "x"}), "bad architecture"),
                       (dict(vocabulary={"kept": list(range(60)), "oov_id": 60}), "vocabulary")):
        (tmp_path / CONFIG_FILE).write_text(json.dumps({**json.loads(config), **bad}))
        with pytest.raises(InputError, match=match):
            load_trained(tmp_path, tokenizer=CharTokenizer())
    (tmp_path / CONFIG_FILE).write_text(config)
    (tmp_path / MODEL_FILE).write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="does not hold this model's weights"):
        load_trained(tmp_path, tokenizer=CharTokenizer())
    with pytest.raises(InputError, match="holds no trained model"):
        load_trained(tmp_path / "elsewhere")


def test_a_run_dir_of_the_old_format_names_the_converter(tmp_path, capsys):
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    torch.save({"model": {}}, old / "checkpoints" / "latest.pt")
    expected = f"{CONVERT_COMMAND} {old}"
    for load in (geomlens.load_model, load_trained, check_model_name):
        with pytest.raises(LegacyRunError, match="convert it once with") as info:
            load(str(old))
        assert expected in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(LegacyRunError):  # the checkpoint file itself is not opened either
        geomlens.load_model(str(old / "checkpoints" / "latest.pt"))
    assert not is_trained(old)
    out = tmp_path / "a"
    assert main(["analyze", "--model", str(old), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and not out.exists()
    with pytest.raises(UnknownModelError, match="neither a trained model"):
        check_model_name(str(tmp_path))


def plant(run_dir: Path, marker: Path) -> list[Path]:
    """Replace every pickle-capable file of ``run_dir`` by a payload that touches ``marker``;
    check that the files left are data (JSON, CSV, safetensors, markers)."""
    planted = pickle_capable(run_dir)
    names = {str(p.relative_to(run_dir)) for p in planted}
    assert {"checkpoints/latest.pt", "checkpoints/step-000002.pt", "checkpoints/step-000004.pt"} <= names
    rest = {p.name for p in run_dir.rglob("*") if p.is_file()} - {p.name for p in planted}
    assert {MODEL_FILE, CONFIG_FILE} <= rest, rest
    assert all(name.endswith((".json", ".csv", ".safetensors")) for name in rest), rest
    for path in planted:
        torch.save(Payload(marker), path)
    return planted


def test_planted_pickles_run_nothing_and_load_model_still_works(tmp_path, one_thread):
    run_dir, _, trained = train_tiny_run(tmp_path / "run", head="sigma", vocab_size=12, steps=4,
                                         checkpoint_every=2)
    step2 = load_checkpoint(run_dir / "checkpoints" / "step-000002.pt")["model"]  # before planting
    marker = tmp_path / "payload-ran"
    planted = plant(run_dir, marker)
    assert run_dir / "kernel.pt" in planted

    model = geomlens.load_model(str(run_dir), device="cpu")
    _same_outputs(model, trained)
    assert model.cfg.d_vocab == 12 and token_map(model).oov_id == 11 and not marker.exists()
    assert model.geomlens_info["step"] == 4 and model.geomlens_info["head"] == "sigma"
    # a checkpoint named as the model: its step's safetensors is read, never the .pt
    early = geomlens.load_model(str(run_dir / "checkpoints" / "step-000002.pt"), device="cpu")
    assert early.geomlens_info["step"] == 2 and not marker.exists()
    for name, tensor in early.state_dict().items():
        assert torch.equal(tensor, step2[name]), name
    latest = geomlens.load_model(str(run_dir / "checkpoints" / "latest.pt"), device="cpu")
    _same_outputs(latest, trained)
    assert not marker.exists()

    torch.load(planted[0], weights_only=False)  # control: the payload is live
    assert marker.exists()


def test_planted_pickles_run_nothing_and_analyze_still_works(tmp_path, monkeypatch, one_thread):
    run_dir, _, _ = train_tiny_run(tmp_path / "run", head="linear", vocab_size=12, steps=4,
                                   checkpoint_every=2)
    marker = tmp_path / "payload-ran"
    planted = plant(run_dir, marker)
    monkeypatch.setattr("geomlens.models.trained.load_tokenizer", lambda name: CharTokenizer())
    out = tmp_path / "analysis"
    args = ["analyze", "--model", str(run_dir), "--n-segments", "1", "--max-tokens", "16",
            "--no-controls", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0 and (out / "done").exists() and not marker.exists()
    per_segment = pd.read_csv(out / "per_segment.csv")
    assert len(per_segment) > 0 and per_segment.notna().any().all()
    project = tmp_path / "projection"
    assert main(["project", "--model", str(run_dir / "checkpoints" / "step-000002.pt"),
                 "--layers", "1", "--neurons", "0-1", "--k", "3", "--device", "cpu",
                 "--out", str(project)]) == 0
    assert len(pd.read_csv(project / "projection.csv")) > 0 and not marker.exists()

    torch.load(planted[-1], weights_only=False)  # control: the payload is live
    assert marker.exists()
