"""TransformerLens 4 view on tiny random Hugging Face models booted into a ``TransformerBridge``
(downloads nothing). Reference: the transformers model itself (hidden states, final norm)."""

import math

import pytest
import torch
from bridge_models import KINDS, bridge_and_reference

from geomlens.backend import installed_backend, view_of

pytestmark = [pytest.mark.tl4,
              pytest.mark.skipif(installed_backend() != "tl4", reason="needs TransformerLens 4")]


@pytest.fixture(params=KINDS)
def pair(request):
    torch.manual_seed(0)
    bridge, reference, hf = bridge_and_reference(request.param)
    tokens = torch.randint(0, 64, (1, 7))
    with torch.no_grad():
        out = reference(tokens, output_hidden_states=True)
    return bridge, hf, tokens, out, request.param


def test_resid_post_matches_transformers(pair):
    bridge, hf, tokens, out, _ = pair
    view = view_of(bridge)
    names = [view.hooks(layer).resid_post for layer in range(view.n_layers)]
    logits, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    torch.testing.assert_close(logits, out.logits, rtol=1e-5, atol=1e-5)
    # transformers' last hidden state is after the final norm; the others are block outputs
    for layer in range(view.n_layers - 1):
        torch.testing.assert_close(cache[names[layer]], out.hidden_states[layer + 1])
    torch.testing.assert_close(view.ln_final(cache[names[-1]]), out.hidden_states[-1],
                               rtol=1e-5, atol=1e-5)


def test_view_layout(pair):
    bridge, hf, _, _, kind = pair
    view = view_of(bridge)
    assert view.backend == "tl4" and view.n_layers == 3 and view.d_model == 32
    assert view.n_kv_heads == (2 if kind == "llama" else 1)
    assert view.qk_norm == (kind == "gemma")
    emb = hf.get_input_embeddings()
    scale = math.sqrt(32) if kind == "gemma" else 1.0
    torch.testing.assert_close(view.W_E, emb.weight * scale)
    torch.testing.assert_close(view.W_U, hf.lm_head.weight.T)
    if kind == "gemma":
        assert view.rotary_bases() == [1e4, 1e6, 1e4]
        assert view.attn_types() == ["local", "global", "local"]
    else:
        assert view.rotary_bases() == [1e4] * 3
        assert view.attn_types() == ["global"] * 3
    assert view.describe()["processing"]["compatibility_mode"] == "no_processing"


def test_every_block_hook_fires_and_is_writable(pair):
    bridge, _, tokens, _, _ = pair
    view = view_of(bridge)
    names = [n for layer in range(view.n_layers) for n in view.hooks(layer).all().values()]
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    assert [n for n in names if n not in cache] == []  # the bridge may add canonical names
    with torch.no_grad():
        clean = bridge(tokens)
        for name in names:
            # affine, not a pure scale: a norm (Gemma's resid_mid -> ln2) ignores a scale
            out = bridge.run_with_hooks(tokens, fwd_hooks=[(name, lambda x, hook: x * 0.5 + 0.1)])
            assert not torch.allclose(out, clean), name


def test_every_module_but_tl3_imports_under_transformerlens_4():
    """Nothing outside geomlens.backend.tl3 imports HookedTransformer at module level."""
    import importlib
    import pkgutil

    import geomlens

    skip = {"geomlens.backend.tl3", "geomlens.__main__"}
    names = [m.name for m in pkgutil.walk_packages(geomlens.__path__, "geomlens.")
             if m.name not in skip]
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            failed.append(f"{name}: {exc}")
    assert len(names) > 100 and failed == []
