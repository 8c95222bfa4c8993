"""Decoding with a cache that stores only the source layers equals the patched full forward."""

import pytest
import torch

from geomlens.errors import InputError
from geomlens.kv import (
    LayerMap,
    SharedKVEntry,
    cache_bytes,
    decode,
    expected_cache_bytes,
    patch_kv,
    shared_kv_cache,
)

PROMPT, NEW = 5, 9  # 14 positions: beyond the Gemma-like window of 4


def full_forward_logits(model, tokens, lm, mode):
    with patch_kv(model, lm, mode):
        return model(tokens)


@pytest.mark.parametrize("mode", ["all", "prev"])
@pytest.mark.parametrize("spec", ["all", "cla", "first_of_type", ">=3"])
def test_greedy_cache_equals_full_forward(kv_model, tokens, mode, spec):
    lm = LayerMap.for_model(spec, kv_model)
    res = decode(kv_model, tokens[:, :PROMPT], lm, mode=mode, max_new_tokens=NEW)
    assert res.tokens.shape == (2, PROMPT + NEW) and res.logits.shape == (2, NEW, 50)
    full = full_forward_logits(kv_model, res.tokens, lm, mode)
    torch.testing.assert_close(res.logits, full[:, PROMPT - 1 : -1], atol=1e-5, rtol=0)
    assert torch.equal(res.tokens[:, PROMPT:], res.logits.argmax(-1))


def test_standard_cache_equals_model(kv_model, tokens):
    res = decode(kv_model, tokens[:, :PROMPT], None, max_new_tokens=NEW)
    torch.testing.assert_close(res.logits, kv_model(res.tokens)[:, PROMPT - 1 : -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["all", "prev"])
def test_sampling_cache_equals_full_forward(kv_model, tokens, mode):
    lm = LayerMap.parse("all", 4)
    runs = [decode(kv_model, tokens[:, :PROMPT], lm, mode=mode, max_new_tokens=NEW, temperature=1.0,
                   top_k=10, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    full = full_forward_logits(kv_model, runs[0].tokens, lm, mode)
    torch.testing.assert_close(runs[0].logits, full[:, PROMPT - 1 : -1], atol=1e-5, rtol=0)
    top = runs[0].logits.topk(10, dim=-1).indices
    assert (top == runs[0].tokens[:, PROMPT:, None]).any(-1).all()  # every pick in the top 10


@pytest.mark.parametrize("spec, n_sources", [("all", 1), ("cla", 2), ("none", 4)])
@pytest.mark.parametrize("new", [1, 4, 11])
def test_measured_bytes_equal_formula(kv_model, tokens, spec, n_sources, new):
    lm = LayerMap.for_model(spec, kv_model)
    res = decode(kv_model, tokens[:, :PROMPT], lm, max_new_tokens=new)
    n_cached = PROMPT + new - 1  # the last generated token has not been fed back
    cfg = kv_model.cfg
    formula = 2 * n_sources * cfg.n_key_value_heads * cfg.d_head * n_cached * 2 * 4  # batch 2, fp32
    assert cache_bytes(res.cache) == formula == expected_cache_bytes(cfg, lm, n_cached, batch_size=2)
    shared = [e for e in res.cache.entries if isinstance(e, SharedKVEntry)]
    assert len(shared) == 4 - n_sources


def test_first_layer_cache_is_n_layers_times_smaller(kv_model, tokens):
    sizes = [cache_bytes(decode(kv_model, tokens[:, :PROMPT], LayerMap.parse(s, 4), max_new_tokens=6).cache)
             for s in ("none", "all")]
    assert sizes[0] == 4 * sizes[1]


def test_shared_entry_errors(kv_model):
    cache = shared_kv_cache(kv_model, LayerMap.parse("all", 4))
    k = torch.zeros(1, 2, 2, 8)
    with pytest.raises(InputError, match="has not stored position 1"):
        cache.entries[1].append(k, k)  # the source (layer 0) has stored nothing yet
    cache.freeze()
    with pytest.raises(InputError, match="cannot be frozen"):
        cache.entries[1].append(k, k)


def test_decode_refuses(kv_model, tokens):
    with pytest.raises(InputError, match="above their consumers"):
        decode(kv_model, tokens, LayerMap.parse("lckv", 4))
    with pytest.raises(InputError, match="max_new_tokens must be >= 1"):
        decode(kv_model, tokens, None, max_new_tokens=0)
    with pytest.raises(InputError, match="equal length"):
        decode(kv_model, [tokens[0, :3], tokens[1, :4]], None)
    with pytest.raises(InputError, match="no tokens"):
        decode(kv_model, tokens[:, :0], None)
