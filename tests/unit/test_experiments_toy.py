"""A tiny test-only experiment kind (`toy`) used by the test_experiments_* files, and its own tests.

`toy` fits a linear regression by minibatch SGD with torch, checkpointing after every step into
the run dir and resuming from the checkpoint when one is there. Setting the environment variable
GEOMLENS_TOY_FAIL_AT=k makes it raise at step k (a simulated interruption that leaves the
config unchanged); it is an environment variable so that `--jobs` child processes see it too
(they import this module through GEOMLENS_EXPERIMENT_PROVIDERS, see `toy_env`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from geomlens.cli import main
from geomlens.experiments.registry import PROVIDERS_ENV, register_experiment

FAIL_ENV = "GEOMLENS_TOY_FAIL_AT"
CALLS = {"count": 0}
"""How many times run_toy ran in this process."""


@dataclass(kw_only=True)
class ToyOpt:
    lr: float = 0.05
    """SGD step size."""
    batch: int = 8
    """Minibatch size."""


@dataclass(kw_only=True)
class ToyConfig:
    seed: int = 0
    """Seeds the data and the minibatch order."""
    n: int = 6
    """Number of SGD steps."""
    dim: int = 4
    """Number of regression weights."""
    opt: ToyOpt = field(default_factory=ToyOpt)
    """Optimiser settings (a nested dataclass)."""
    mode: Literal["sgd", "sign"] = "sgd"
    """Update rule."""
    clip: float | None = None
    """Gradient clip (None = unset)."""
    tags: list[str] = field(default_factory=list)
    """Free labels."""
    device: str | None = "cpu"
    """Where it runs."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


def run_toy(cfg: ToyConfig, run_dir: Path) -> dict:
    CALLS["count"] += 1
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(64, cfg.dim, generator=gen)
    y = x @ torch.randn(cfg.dim, generator=gen)
    w, start = torch.zeros(cfg.dim), 0
    ckpt = run_dir / "ckpt.pt"
    if ckpt.exists():
        state = torch.load(ckpt)
        w, start = state["w"], state["step"]
    with open(run_dir / "starts.txt", "a") as f:
        f.write(f"{start}\n")
    fail_at = os.environ.get(FAIL_ENV)
    for step in range(start, cfg.n):
        if fail_at is not None and step == int(fail_at):
            raise RuntimeError(f"simulated interruption at step {step}")
        batch_gen = torch.Generator().manual_seed(cfg.seed * 10_000 + step)
        idx = torch.randint(0, 64, (cfg.opt.batch,), generator=batch_gen)
        grad = 2 * x[idx].T @ (x[idx] @ w - y[idx]) / cfg.opt.batch
        if cfg.clip is not None:
            grad = grad.clamp(-cfg.clip, cfg.clip)
        w = w - cfg.opt.lr * (grad if cfg.mode == "sgd" else grad.sign())
        torch.save({"step": step + 1, "w": w}, ckpt)
    loss = ((x @ w - y) ** 2).mean().item()
    return {"loss": loss, "weights": {"norm": w.norm().item(), "first": w[0].item()}, "tag": "toy"}


register_experiment("toy", ToyConfig, run_toy, resumable=True)


def toy_env(monkeypatch) -> None:
    """Let `python -m geomlens` child processes import this module (and so the `toy` kind)."""
    here = str(Path(__file__).parent)
    monkeypatch.setenv(PROVIDERS_ENV, "test_experiments_toy")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))


def write_configs(folder: Path, out: Path, *, sweep: str = "", extra: str = "") -> Path:
    """A base.yaml and a toy.yaml (defaults: [base]) in ``folder``; returns the toy.yaml path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(f"out: {out}/unnamed\nconfig:\n  seed: 0\n  n: 6\n")
    (folder / "toy.yaml").write_text(
        f"defaults: [base]\nexperiment: toy\nout: {out}\nconfig:\n  n: 5\n  opt:\n    lr: 0.1\n"
        + extra + (f"sweep:\n{sweep}" if sweep else "")
    )
    return folder / "toy.yaml"


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


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
