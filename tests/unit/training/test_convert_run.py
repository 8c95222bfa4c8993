"""`geomlens convert-run`: a run directory of the old format (pickled checkpoints with numpy RNG
states, no safetensors model) becomes one that loads as a model and resumes exactly; a file
that needs more than data to unpickle is refused unless --trust-pickle is given."""

from __future__ import annotations

import fractions
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import build_cfg, token_stream

import geomlens
from geomlens.cli import main
from geomlens.data.token_map import token_map
from geomlens.errors import LegacyRunError, UnsafeFileError
from geomlens.models.cache import config_from_json
from geomlens.models.trained import CONFIG_FILE, MODEL_FILE
from geomlens.training import TrainConfig, Trainer
from geomlens.training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from geomlens.training.convert_run import convert_run

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = dict(model="tiny", head="linear", steps=6, batch_size=2, seq_len=16, lr=1e-2, warmup=1,
           eval_every=3, eval_tokens=64, log_every=1, device="cpu", seed=0, vocab_size=12,
           checkpoint_every=2)


class Payload:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _trainer(run_dir: Path) -> Trainer:
    return Trainer(TrainConfig(**CFG), run_dir, model_cfg=build_cfg(d_vocab=12), stream=token_stream())


def make_old_format(run_dir: Path, kept: torch.Tensor | None) -> None:
    """Rewrite a run dir as the earlier trainer wrote it: checkpoints with numpy's RNG state as
    its tuple, the model config as ``to_dict()`` (torch dtype, numpy floats), no format key, the
    kept ids in vocab.pt, and no model.safetensors / model.json."""
    for path in (run_dir / "checkpoints").glob("*.pt"):
        state = load_checkpoint(path)
        state.pop("format")
        n = state["rng"]["numpy"]
        state["rng"]["numpy"] = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                                 n["has_gauss"], n["cached_gaussian"])
        state["model_config"] = config_from_json(state["model_config"]).to_dict()
        torch.save(state, path)
    if kept is not None:
        torch.save({"kept": kept}, run_dir / "vocab.pt")
    (run_dir / MODEL_FILE).unlink()
    (run_dir / CONFIG_FILE).unlink()


def test_converted_old_run_loads_and_resumes_exactly(tmp_path, capsys):
    straight = _trainer(tmp_path / "straight")
    straight.train()
    first = _trainer(tmp_path / "old")
    first.train(stop_at=5)  # killed after step 5: the last checkpoint is step 4
    kept = first.data.kept
    make_old_format(tmp_path / "old", kept)
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(
        tmp_path / "old" / "checkpoints" / "latest.pt")
    with pytest.raises(LegacyRunError, match="geomlens convert-run"):
        geomlens.load_model(str(tmp_path / "old"))
    with pytest.raises(UnsafeFileError, match="geomlens convert-run"):  # resuming needs it too
        _trainer(tmp_path / "old")

    assert main(["convert-run", str(tmp_path / "old")]) == 0
    assert "Converted" in capsys.readouterr().out
    for path in (tmp_path / "old" / "checkpoints").glob("*.pt"):
        assert load_checkpoint(path)["format"] == CHECKPOINT_FORMAT
    model = geomlens.load_model(str(tmp_path / "old"), device="cpu")
    assert model.geomlens_info["step"] == 4 and torch.equal(token_map(model).kept, kept)
    early = geomlens.load_model(str(tmp_path / "old" / "checkpoints" / "step-000002.pt"))
    assert early.geomlens_info["step"] == 2
    tokens = torch.randint(0, 12, (2, 8), generator=torch.Generator().manual_seed(1))
    first.model.eval()
    with torch.no_grad():  # first's model is at step 5; the converted model is the step-4 one
        assert not torch.equal(model(tokens), first.model(tokens))

    torch.manual_seed(1234)
    resumed = _trainer(tmp_path / "old")
    assert resumed.step == 4
    resumed.train()
    for (k, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    final = geomlens.load_model(str(tmp_path / "old"), device="cpu")
    straight.model.eval()
    with torch.no_grad():
        assert torch.equal(final(tokens), straight.model(tokens))


def test_a_payload_is_refused_without_trust_and_runs_nothing(tmp_path, capsys):
    run_dir = tmp_path / "old"
    _trainer(run_dir).train()
    make_old_format(run_dir, None)
    marker = tmp_path / "payload-ran"
    torch.save(Payload(marker), run_dir / "checkpoints" / "latest.pt")
    assert main(["convert-run", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--trust-pickle" in err and "system" in err, err
    assert not marker.exists() and not (run_dir / MODEL_FILE).exists()


def test_trust_pickle_converts_what_the_restricted_reader_refuses(tmp_path):
    run_dir = tmp_path / "old"
    _trainer(run_dir).train()
    make_old_format(run_dir, _trainer(tmp_path / "ref").data.kept)
    latest = run_dir / "checkpoints" / "latest.pt"
    state = torch.load(latest, weights_only=False)
    state["note"] = fractions.Fraction(1, 3)  # harmless, but not data the restricted reader allows
    torch.save(state, latest)
    with pytest.raises(UnsafeFileError, match="--trust-pickle"):
        convert_run(run_dir)
    convert_run(run_dir, trust_pickle=True)
    assert geomlens.load_model(str(run_dir), device="cpu").geomlens_info["step"] == 6
