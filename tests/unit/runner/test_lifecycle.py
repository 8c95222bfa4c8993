"""The one run lifecycle: validate before any directory, the same seeding for CLI and YAML,
`failed` markers, and `geomlens run` treating a failed point as not done."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import ToyConfig, read_summary, write_configs

from geomlens.cli import COMMANDS, main
from geomlens.errors import InputError
from geomlens.rundir import failure, is_done
from geomlens.runner.command import Command
from geomlens.runner.lifecycle import execute

TIMING = ("per_s", "time", "seconds")


@pytest.fixture()
def random_corpus(monkeypatch):
    g = torch.Generator().manual_seed(0)
    stream = torch.randint(0, 49152, (3000,), generator=g)
    monkeypatch.setattr("geomlens.training.loop.load_token_stream", lambda split: stream)


TRAIN = {"model": "micro-1m", "head": "sigma", "steps": 3, "batch_size": 2, "seq_len": 16,
         "eval_every": 3, "eval_tokens": 64, "vocab_size": 64, "device": "cpu", "seed": 5}


def _metrics(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if not any(t in k for t in TIMING)}


@pytest.mark.usefixtures("one_thread", "random_corpus")
def test_cli_run_and_yaml_run_give_bitwise_identical_summaries(tmp_path):
    flags = [x for k, v in TRAIN.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    assert main(["train", *flags, "--out", str(tmp_path / "cli")]) == 0
    config = "\n".join(f"  {k}: {v}" for k, v in TRAIN.items())
    (tmp_path / "t.yaml").write_text(f"experiment: train\nout: {tmp_path / 'yaml'}\nconfig:\n{config}\n")
    assert main(["run", str(tmp_path / "t.yaml")]) == 0
    cli, yaml = read_summary(tmp_path / "cli"), read_summary(tmp_path / "yaml")
    assert _metrics(cli) == _metrics(yaml)  # floats compared exactly
    assert "val_loss" in _metrics(cli)
    stored = [json.loads((tmp_path / d / "config.json").read_text()) for d in ("cli", "yaml")]
    assert stored[0] == stored[1]


def _kind(run, validate=None) -> Command:
    return Command("lifecycle_test", ToyConfig, run, validate)


def test_validation_runs_before_any_directory(tmp_path):
    def refuse(cfg):
        raise InputError("bad input")

    with pytest.raises(InputError):
        execute(_kind(lambda cfg, d: {}, refuse), ToyConfig(), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_failed_run_is_marked_with_its_message(tmp_path):
    def boom(cfg, run_dir):
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        execute(_kind(boom), ToyConfig(), tmp_path / "r")
    assert failure(tmp_path / "r") == "RuntimeError: disk on fire"
    assert not is_done(tmp_path / "r") and (tmp_path / "r" / "config.json").exists()
    run_dir, summary = execute(_kind(lambda cfg, d: {"ok": 1}), ToyConfig(), tmp_path / "r", mode="resume")
    assert failure(run_dir) is None and is_done(run_dir) and summary == {"ok": 1}


def test_geomlens_run_reruns_a_failed_point(tmp_path, monkeypatch, capsys):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs")
    monkeypatch.setenv("GEOMLENS_TOY_FAIL_AT", "2")
    assert main(["run", str(cfg)]) == 1
    assert "simulated interruption" in failure(tmp_path / "runs")
    monkeypatch.delenv("GEOMLENS_TOY_FAIL_AT")
    assert main(["run", str(cfg)]) == 0
    assert is_done(tmp_path / "runs") and failure(tmp_path / "runs") is None
    starts = (tmp_path / "runs" / "starts.txt").read_text().split()
    assert starts == ["0", "2"]  # resumed from its checkpoint, not restarted
    assert read_summary(tmp_path / "runs")["tag"] == "toy"


def test_commands_are_one_registry():
    assert {"analyze", "ablate", "train", "kv", "project", "align", "toy"} <= set(COMMANDS.names())
    assert COMMANDS.describe("train")
