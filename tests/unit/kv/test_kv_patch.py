"""The hook patch against the hand-written reference (tests/kv_reference.py)."""

import pytest
import torch
from kv_reference import reference_logits

from geomlens.errors import InputError
from geomlens.kv import LayerMap, key_recipe, patch_kv

SPECS = ["all", ">=2", "3", "cla", "first_of_type"]


def patched(model, tokens, lm, mode):
    with patch_kv(model, lm, mode):
        return model(tokens)


def test_reference_without_sharing_is_the_model(kv_model, tokens):
    ref = reference_logits(kv_model, tokens, LayerMap.none(4))
    torch.testing.assert_close(ref, kv_model(tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["all", "prev"])
def test_own_kv_changes_nothing(kv_model, tokens, mode):
    clean = kv_model(tokens)
    out = patched(kv_model, tokens, LayerMap.own(4), mode)
    torch.testing.assert_close(out, clean, atol=1e-5, rtol=0)
    if mode == "all":
        assert torch.equal(out, clean)


@pytest.mark.parametrize("mode", ["all", "prev"])
@pytest.mark.parametrize("spec", SPECS)
def test_patch_matches_reference(kv_model, tokens, mode, spec):
    lm = LayerMap.for_model(spec, kv_model)
    out = patched(kv_model, tokens, lm, mode)
    torch.testing.assert_close(out, reference_logits(kv_model, tokens, lm, mode), atol=1e-5, rtol=0)
    assert (out - kv_model(tokens)).abs().max() > 0.1  # the patch does something


def test_modes_differ_and_prev_keeps_first_position(kv_model, tokens):
    lm = LayerMap.parse("all", 4)
    a, p = patched(kv_model, tokens, lm, "all"), patched(kv_model, tokens, lm, "prev")
    assert (a - p).abs().max() > 0.1
    # position 0 sees only itself: in prev mode that is its own K/V, i.e. the clean model
    torch.testing.assert_close(p[:, 0], kv_model(tokens)[:, 0], atol=1e-5, rtol=0)


def test_recipe_follows_cfg(kv_model):
    assert key_recipe(kv_model) == ("k_norm" if kv_model.cfg.use_qk_norm else "hook_k")


def test_copying_hook_k_is_wrong_under_qk_norm(gemma_model, tokens):
    """Why Gemma needs the k_norm recipe: copying hook_k re-applies layer l's key norm."""
    store = {}

    def grab(k, *, hook):
        store["k"] = k

    def put(k, *, hook):
        return store["k"]

    hooks = [("blocks.0.attn.hook_k", grab)] + [(f"blocks.{layer}.attn.hook_k", put) for layer in (1, 2, 3)]
    hooks += [("blocks.0.attn.hook_v", lambda v, *, hook: store.__setitem__("v", v))]
    hooks += [(f"blocks.{layer}.attn.hook_v", lambda v, *, hook: store["v"]) for layer in (1, 2, 3)]
    naive = gemma_model.run_with_hooks(tokens, fwd_hooks=hooks)
    ref = reference_logits(gemma_model, tokens, LayerMap.parse("all", 4))
    assert (naive - ref).abs().max() > 1e-2


def test_hooks_removed_after_context(kv_model, tokens):
    clean = kv_model(tokens)
    with pytest.raises(RuntimeError):
        with patch_kv(kv_model, LayerMap.parse("all", 4), "prev"):
            raise RuntimeError("boom")
    assert torch.equal(kv_model(tokens), clean)
    assert all(not m._forward_hooks for m in kv_model.modules())


@pytest.mark.parametrize("spec, mode, message", [
    ("lckv", "all", "above their consumers"),
    ("all", "both", "mode must be one of"),
])
def test_refuses(kv_model, spec, mode, message):
    with pytest.raises(InputError, match=message):
        with patch_kv(kv_model, LayerMap.parse(spec, 4), mode):
            pass


def test_refuses_wrong_depth(kv_model):
    with pytest.raises(InputError, match="has 6 layers; the model has 4"):
        with patch_kv(kv_model, LayerMap.parse("all", 6)):
            pass
