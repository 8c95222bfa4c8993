"""Tests of the test-only `toy` command (defined in tests/helpers.py) through `geomlens run`."""

from __future__ import annotations

import json

from helpers import ToyConfig, read_summary, run_toy, write_configs

from geomlens.cli import main


def test_same_seed_gives_identical_numbers(tmp_path):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs")
    assert main(["run", str(cfg), f"out={tmp_path}/a", "seed=3"]) == 0
    assert main(["run", str(cfg), f"out={tmp_path}/b", "seed=3"]) == 0
    assert main(["run", str(cfg), f"out={tmp_path}/c", "seed=4"]) == 0
    a, b, c = (read_summary(tmp_path / d) for d in "abc")
    assert a == b  # bitwise identical floats
    assert a["loss"] != c["loss"]
    env = json.loads((tmp_path / "a" / "env.json").read_text())
    assert env["seed"] == 3 and "git_hash" in env and "packages" in env


def test_toy_learns(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    short = run_toy(ToyConfig(n=1), run_dir)
    long_dir = tmp_path / "l"
    long_dir.mkdir()
    long = run_toy(ToyConfig(n=30), long_dir)
    assert long["loss"] < short["loss"]
