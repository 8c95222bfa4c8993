"""Tiny CPU defaults for unit tests (SAELens-style `build_cfg(**overrides)`)."""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig


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
