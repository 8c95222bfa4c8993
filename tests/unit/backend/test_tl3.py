"""TransformerLens 3 view on tiny random HookedTransformers (downloads nothing)."""

import pytest
import torch

from geomlens.backend import installed_backend, view_of

pytestmark = pytest.mark.skipif(installed_backend() != "tl3", reason="needs TransformerLens 3")


def _gemma_like():
    from helpers import build_model

    return build_model(n_layers=4, use_qk_norm=True, use_local_attn=True,
                       attn_types=["local", "local", "global", "local"], window_size=4,
                       rotary_base=1_000_000, rotary_base_local=10_000,
                       use_normalization_before_and_after=True)


def test_view_answers_from_the_model(tiny_model):
    view = view_of(tiny_model)
    cfg = tiny_model.cfg
    assert view.backend == "tl3"
    assert (view.n_layers, view.d_model, view.d_vocab) == (cfg.n_layers, cfg.d_model, cfg.d_vocab)
    assert view.n_kv_heads == cfg.n_key_value_heads and view.n_heads % view.n_kv_heads == 0
    assert view.W_E is tiny_model.W_E and view.W_U is tiny_model.W_U and view.b_U is tiny_model.b_U
    assert view.softcap is None and not view.qk_norm
    assert view.rotary_bases() == [float(cfg.rotary_base)] * cfg.n_layers
    resid = torch.randn(2, 3, cfg.d_model)
    torch.testing.assert_close(view.ln_final(resid), tiny_model.ln_final(resid))
    assert view.describe()["processing"] == {"fold_ln": False, "center_writing_weights": False,
                                             "center_unembed": False}


def test_gemma_like_layout():
    view = view_of(_gemma_like())
    assert view.qk_norm
    assert view.rotary_bases() == [1e4, 1e4, 1e6, 1e4]
    assert view.attn_types() == ["local", "local", "global", "local"]
    assert [b.attn._rotary_base() for b in view.model.blocks] == view.rotary_bases()


def test_every_block_hook_fires_and_is_writable(tiny_model):
    view = view_of(tiny_model)
    tokens = torch.randint(0, view.d_vocab, (1, 5))
    names = [n for layer in range(view.n_layers) for n in view.hooks(layer).all().values()]
    _, cache = tiny_model.run_with_cache(tokens, names_filter=lambda n: n in names)
    assert sorted(cache.keys()) == sorted(names)
    clean = tiny_model(tokens)
    for layer in (0, view.n_layers - 1):
        for name in view.hooks(layer).all().values():
            out = tiny_model.run_with_hooks(tokens, fwd_hooks=[(name, lambda x, hook: x * 0.5)])
            assert not torch.allclose(out, clean), name


def test_hooks_reject_a_layer_out_of_range(tiny_model):
    with pytest.raises(IndexError):
        view_of(tiny_model).hooks(tiny_model.cfg.n_layers)
