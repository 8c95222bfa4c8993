"""Tiny models and tiny training runs for the projection tests (CPU, nothing downloaded).
`helpers` (TransformerLens 3) is imported inside the fixtures, so that the bridge tests here
collect under TransformerLens 4."""

from __future__ import annotations

import pytest


@pytest.fixture()
def gqa_model(one_thread):
    """2 layers, d_model 32, 4 query heads on 2 KV heads, gated MLP (64), vocab 50."""
    from helpers import build_model

    model = build_model()
    assert model.cfg.n_key_value_heads == 2 and model.cfg.n_heads == 4 and model.cfg.d_vocab == 50
    return model


@pytest.fixture()
def make_run(tmp_path, one_thread):
    """Factory: ``make_run(name, seed=0, vocab_size=None)`` trains a tiny run under tmp_path."""

    def make(name: str = "run", **kw):
        from helpers import train_tiny_run

        return train_tiny_run(tmp_path / name, **kw)

    return make
