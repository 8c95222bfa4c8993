"""Tiny models and tiny training runs for the projection tests (CPU, nothing downloaded)."""

from __future__ import annotations

import pytest
import torch
from helpers import build_cfg, build_model


@pytest.fixture()
def gqa_model(one_thread):
    """2 layers, d_model 32, 4 query heads on 2 KV heads, gated MLP (64), vocab 50."""
    model = build_model()
    assert model.cfg.n_key_value_heads == 2 and model.cfg.n_heads == 4 and model.cfg.d_vocab == 50
    return model


def token_stream(n: int = 3000, d_vocab: int = 50, seed: int = 0) -> torch.Tensor:
    """A learnable stream: a repeating pattern with 10% random tokens."""
    g = torch.Generator().manual_seed(seed)
    base = (torch.arange(n) * 3) % 7 + 10
    noise = torch.randint(0, d_vocab, (n,), generator=g)
    return torch.where(torch.rand(n, generator=g) < 0.1, noise, base)


def train_tiny_run(run_dir, *, seed: int = 0, vocab_size: int | None = None, steps: int = 3):
    """A tiny training run dir (linear head); returns (run_dir, stream, trained model)."""
    from geomlens.training import TrainConfig, Trainer

    stream = token_stream()
    d_vocab = vocab_size if vocab_size is not None else 50
    cfg = TrainConfig(model="tiny", head="linear", steps=steps, batch_size=2, seq_len=16, lr=1e-2,
                      warmup=1, eval_every=steps, eval_tokens=64, log_every=steps, device="cpu",
                      seed=seed, vocab_size=vocab_size)
    trainer = Trainer(cfg, run_dir, model_cfg=build_cfg(d_vocab=d_vocab, seed=seed), stream=stream)
    trainer.train()
    assert trainer.model.cfg.d_vocab == d_vocab and trainer.step == steps
    return run_dir, stream, trainer.model


@pytest.fixture()
def make_run(tmp_path, one_thread):
    """Factory: ``make_run(name, seed=0, vocab_size=None)`` trains a tiny run under tmp_path."""

    def make(name: str = "run", **kw):
        return train_tiny_run(tmp_path / name, **kw)

    return make
