"""First-layer K/V patching on TransformerLens 4 (`TransformerBridge`), tiny random Llama and
Gemma-3 models. Reference: the untouched transformers model with torch hooks that give every
layer layer 0's key after its own key norm (before rotary) and layer 0's values, i.e. the
definition in `geomlens.kv.patch`, computed without the bridge or geomlens."""

import pytest
import torch
from bridge_models import KINDS, bridge_and_reference

from geomlens.backend import installed_backend, view_of

pytestmark = [pytest.mark.tl4,
              pytest.mark.skipif(installed_backend() != "tl4", reason="needs TransformerLens 4")]


@pytest.fixture(params=KINDS, scope="module")
def models(request):
    torch.manual_seed(0)
    bridge, reference, _ = bridge_and_reference(request.param)
    return bridge, reference, request.param


@pytest.fixture
def tokens():
    return torch.randint(0, 64, (2, 9))


def _reference_first_layer_kv(reference, tokens, consumers):
    """Logits of the transformers model whose ``consumers`` read layer 0's K (post-norm,
    pre-rotary) and V, by forward hooks on its own modules."""
    store, handles = {}, []
    for layer, block in enumerate(reference.model.layers):
        attn = block.self_attn
        for key, module in (("k", getattr(attn, "k_norm", None) or attn.k_proj), ("v", attn.v_proj)):
            def hook(mod, args, out, key=key, layer=layer):
                if layer == 0:
                    store[key] = out
                    return None
                return store[key] if layer in consumers else None
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            return reference(tokens).logits
    finally:
        for h in handles:
            h.remove()


def test_all_mode_matches_the_transformers_reference(models, tokens):
    from geomlens.kv import LayerMap, patch_kv

    bridge, reference, kind = models
    n = view_of(bridge).n_layers
    want = _reference_first_layer_kv(reference, tokens, consumers=set(range(1, n)))
    clean = reference(tokens).logits
    with torch.no_grad(), patch_kv(bridge, LayerMap.parse("all", n)):
        got = bridge(tokens)
    assert (want - clean).abs().max() > 1e-2  # the patch changes the model
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_recipe_and_view(models):
    from geomlens.kv import key_recipe

    bridge, reference, kind = models
    view = view_of(bridge)
    assert key_recipe(bridge) == ("k_norm" if kind == "gemma" else "hook_k")
    attn = reference.model.layers[0].self_attn
    assert view.attn_scale(0) == pytest.approx(1 / attn.scaling)
    assert view.attn_softcap is None and view.softcap is None


@pytest.mark.parametrize("spec", ["all", "2"])
def test_prev_mode_diagonal(models, tokens, spec):
    """``prev``: patched with its own K/V every layer is the clean model (the diagonal fix
    recomputes q·k/scale exactly); with layer 0's, position 0 sees only itself = clean."""
    from geomlens.kv import LayerMap, patch_kv

    bridge, _, _ = models
    n = view_of(bridge).n_layers
    with torch.no_grad():
        clean = bridge(tokens)
        with patch_kv(bridge, LayerMap.own(n), "prev"):
            own = bridge(tokens)
        with patch_kv(bridge, LayerMap.parse(spec, n), "prev"):
            prev = bridge(tokens)
        with patch_kv(bridge, LayerMap.parse(spec, n), "all"):
            every = bridge(tokens)
    torch.testing.assert_close(own, clean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(prev[:, 0], clean[:, 0], rtol=1e-5, atol=1e-5)
    assert (prev - every).abs().max() > 1e-3 and (prev - clean).abs().max() > 1e-3


def test_decoding_with_a_shared_cache_names_the_install(models):
    """The first-layer KV cache is TransformerLens 3's cache class: one line, no traceback."""
    from geomlens.errors import MissingPackageError
    from geomlens.kv import LayerMap, decode

    bridge, _, _ = models
    with pytest.raises(MissingPackageError, match=r"transformer-lens>=3.9,<4"):
        decode(bridge, torch.randint(4, 64, (1, 5)), LayerMap.parse("all", 3), max_new_tokens=2)


def test_first_of_type_map_follows_the_attention_types(models):
    """``first_of_type`` on the bridge: Gemma's global layer keeps its own K/V."""
    from geomlens.kv import LayerMap

    bridge, _, kind = models
    lm = LayerMap.for_model("first_of_type", bridge)
    assert lm.source == ((0, 1, 0) if kind == "gemma" else (0, 0, 0))
