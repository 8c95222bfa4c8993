"""Tiny models for the first-layer K/V tests (download nothing). `helpers` (TransformerLens 3)
is imported inside the builders, so that test_kv_patch_bridge.py collects under TransformerLens 4."""

import pytest
import torch

N_LAYERS = 4
GEMMA_TYPES = ["local", "local", "global", "local"]


def llama_like():
    """4 layers, 4 query heads sharing 2 KV heads (GQA), rotary, no qk-norm."""
    from helpers import build_model

    model = build_model(n_layers=N_LAYERS)
    assert model.cfg.n_layers == 4 and model.cfg.n_key_value_heads == 2 and not model.cfg.use_qk_norm
    return model


def gemma_like():
    """Gemma-3-like: qk-norm, pre+post norms, local layers (window 4, rotary base 1e4) and a
    global layer (base 1e6); layer 0 is local, as in Gemma-3-270m."""
    from helpers import build_model

    model = build_model(n_layers=N_LAYERS, use_qk_norm=True, use_local_attn=True, attn_types=GEMMA_TYPES, window_size=4,
                        rotary_base=1_000_000, rotary_base_local=10_000,
                        use_normalization_before_and_after=True)
    # random qk-norm weights, so that applying the wrong layer's norm shows
    with torch.no_grad():
        for block in model.blocks:
            block.attn.k_norm.w.uniform_(0.5, 1.5)
            block.attn.q_norm.w.uniform_(0.5, 1.5)
    cfg = model.cfg
    assert cfg.n_layers == 4 and cfg.use_qk_norm and cfg.window_size == 4
    assert [b.attn.attn_type for b in model.blocks] == GEMMA_TYPES
    assert model.blocks[0].attn._rotary_base() == 10_000 and model.blocks[2].attn._rotary_base() == 1_000_000
    return model


@pytest.fixture(params=["llama", "gemma"])
def kv_model(request, one_thread):
    return llama_like() if request.param == "llama" else gemma_like()


@pytest.fixture()
def llama_model(one_thread):
    return llama_like()


@pytest.fixture()
def gemma_model(one_thread):
    return gemma_like()


@pytest.fixture()
def tokens():
    t = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    assert t.shape == (2, 12)
    return t
