"""Test helpers: tiny CPU models (SAELens-style `build_cfg(**overrides)`) and the test-only
`toy` command.

`toy` fits a linear regression by minibatch SGD with torch, checkpointing after every step into
the run dir and resuming from the checkpoint when one is there. Setting the environment variable
GEOMLENS_TOY_FAIL_AT=k makes it raise at step k (a simulated interruption that leaves the
config unchanged); it is an environment variable so that `--jobs` child processes see it too
(they import this module through GEOMLENS_PLUGINS, see `toy_env`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from geomlens.runner.command import PLUGINS_ENV, Command, register


def build_cfg(**overrides) -> HookedTransformerConfig:
    """A tiny LLaMA-like config: 2 layers, d_model 32, 4 heads, vocab 50."""
    kw = dict(
        n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, d_vocab=50, n_ctx=32,
        act_fn="silu", gated_mlp=True, normalization_type="RMS", final_rms=True,
        positional_embedding_type="rotary", rotary_dim=8, rotary_adjacent_pairs=False,
        n_key_value_heads=2, default_prepend_bos=False, seed=0, device="cpu",
    )
    kw.update(overrides)
    return HookedTransformerConfig(**kw)


def build_model(**overrides) -> HookedTransformer:
    """A tiny random HookedTransformer in eval mode (no tokenizer, downloads nothing)."""
    cfg = build_cfg(**overrides)
    torch.manual_seed(0)
    model = HookedTransformer(cfg)
    model.eval()
    assert model.cfg.n_layers == cfg.n_layers and model.cfg.d_vocab == cfg.d_vocab
    return model


# ------------------------------------------------------------------ tiny training runs


def token_stream(n: int = 3000, d_vocab: int = 50, seed: int = 0) -> torch.Tensor:
    """A learnable stream: a repeating pattern with 10% random tokens."""
    g = torch.Generator().manual_seed(seed)
    base = (torch.arange(n) * 3) % 7 + 10
    noise = torch.randint(0, d_vocab, (n,), generator=g)
    return torch.where(torch.rand(n, generator=g) < 0.1, noise, base)


def train_tiny_run(run_dir, *, seed: int = 0, vocab_size: int | None = None, steps: int = 3,
                   head: str = "linear", checkpoint_every: int | None = None):
    """A tiny training run dir (``head``, default linear); returns (run_dir, stream, trained
    model)."""
    from geomlens.training import TrainConfig, Trainer

    stream = token_stream()
    d_vocab = vocab_size if vocab_size is not None else 50
    cfg = TrainConfig(model="tiny", head=head, steps=steps, batch_size=2, seq_len=16, lr=1e-2,
                      warmup=1, eval_every=steps, eval_tokens=64, log_every=steps, device="cpu",
                      seed=seed, vocab_size=vocab_size, checkpoint_every=checkpoint_every)
    trainer = Trainer(cfg, run_dir, model_cfg=build_cfg(d_vocab=d_vocab, seed=seed), stream=stream)
    trainer.train()
    assert trainer.model.cfg.d_vocab == d_vocab and trainer.step == steps
    return run_dir, stream, trainer.model


# ------------------------------------------------------------------ the toy command

FAIL_ENV = "GEOMLENS_TOY_FAIL_AT"
SLEEP_ENV = "GEOMLENS_TOY_SLEEP"  # seconds per toy step (tests of signals and locks)
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
        state = torch.load(ckpt, weights_only=True)
        w, start = state["w"], state["step"]
    with open(run_dir / "starts.txt", "a") as f:
        f.write(f"{start}\n")
    fail_at = os.environ.get(FAIL_ENV)
    pause = float(os.environ.get(SLEEP_ENV, "0"))
    for step in range(start, cfg.n):
        time.sleep(pause)
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


COMMANDS = (Command("toy", ToyConfig, run_toy, resumable=True,
                    help="test-only: linear regression by SGD"),)
register(*COMMANDS)


def toy_env(monkeypatch) -> None:
    """Let `python -m geomlens` child processes import this module (and so the `toy` command)."""
    here = str(Path(__file__).parent)
    monkeypatch.setenv(PLUGINS_ENV, "helpers")
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


# ------------------------------------------------------------------ text in


class CharTokenizer:
    """One id per character (3 + ord % 47 < 50), no BOS; decodes id i as chr(i)."""

    bos_token_id = None
    eos_token_id = 2
    padding_side = "right"

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [3 + ord(c) % 47 for c in text]}

    def decode(self, ids, **kw):
        return "".join(chr(i) for i in ids)


def text_model(**overrides) -> HookedTransformer:
    """`build_model` that reads text: a `CharTokenizer` attached as its token map."""
    from geomlens.data.token_map import ATTRIBUTE, TokenMap

    model = build_model(**overrides)
    setattr(model, ATTRIBUTE, TokenMap(tokenizer=CharTokenizer(), d_vocab=model.cfg.d_vocab))
    return model
