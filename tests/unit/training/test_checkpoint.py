"""Resume state is data: checkpoints load with torch.load(weights_only=True); a checkpoint with
a pickle payload is refused in one line and runs nothing; RNG states round-trip exactly."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from helpers import build_cfg, token_stream

from geomlens.cli import main
from geomlens.errors import UnsafeFileError
from geomlens.training import TrainConfig, Trainer
from geomlens.training.checkpoint import (
    CHECKPOINT_FORMAT,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    set_rng_state,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class Payload:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _draws() -> tuple:
    return (torch.rand(3).tolist(), random.random(), np.random.rand(3).tolist(),
            np.random.standard_normal())


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = _draws()
    _draws()  # move every generator on
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == expected


def test_checkpoint_holds_only_tensors_and_plain_values(tmp_path):
    cfg = TrainConfig(model="tiny", head="hybrid", steps=2, batch_size=2, seq_len=16, warmup=1,
                      eval_every=2, eval_tokens=64, log_every=1, device="cpu")
    Trainer(cfg, tmp_path, model_cfg=build_cfg(), stream=token_stream()).train()
    path = latest_checkpoint(tmp_path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    state = load_checkpoint(path)
    assert state["format"] == CHECKPOINT_FORMAT and state["step"] == 2
    json.dumps(state["model_config"])  # the architecture as JSON values


def test_resume_from_a_planted_checkpoint_is_one_line_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("geomlens.training.loop.load_token_stream", lambda split: token_stream())
    out, marker = tmp_path / "run", tmp_path / "payload-ran"
    args = ["train", "--model", "micro-1m", "--head", "sigma", "--steps", "2", "--batch-size", "2",
            "--seq-len", "16", "--eval-every", "2", "--eval-tokens", "64", "--vocab-size", "50",
            "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    (out / "done").unlink()
    planted = [p for p in out.rglob("*.pt")]
    assert {p.name for p in planted} >= {"latest.pt", "step-000002.pt", "kernel.pt"}
    for path in planted:
        torch.save(Payload(marker), path)
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "cannot be read as tensors and plain values" in err and "system" in err, err
    assert "geomlens convert-run" in err
    with pytest.raises(UnsafeFileError):
        load_checkpoint(out / "checkpoints" / "latest.pt")
    assert not marker.exists()
    torch.load(planted[0], weights_only=False)  # control: the payload is live
    assert marker.exists()
