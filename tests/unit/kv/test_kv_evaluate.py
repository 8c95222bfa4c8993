"""Losses, bootstrap CIs, KVConfig and validate_kv."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geomlens.errors import InputError
from geomlens.kv import (
    KVConfig,
    LayerMap,
    loss_rows,
    patch_kv,
    ratio_ci,
    segment_losses,
    validate_kv,
)


def test_segment_losses_match_direct_cross_entropy(kv_model):
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(0, 50, (n,), generator=g) for n in (7, 12, 3, 9)]
    lm = LayerMap.parse("all", 4)
    sums, counts = segment_losses(kv_model, seqs, layer_map=lm, mode="prev", batch_size=3)
    assert counts.tolist() == [6, 11, 2, 8]
    with patch_kv(kv_model, lm, "prev"):
        for s, total in zip(seqs, sums):  # one unpadded sequence at a time
            with torch.no_grad():
                ce = F.cross_entropy(kv_model(s[None])[0, :-1], s[1:], reduction="sum")
            assert abs(float(ce) - total) < 1e-4


def test_ratio_ci_is_the_token_weighted_mean():
    sums, counts = np.array([10.0, 30.0, 5.0]), np.array([5, 10, 5])
    mean, low, high = ratio_ci(sums, counts, n_bootstrap=500)
    assert mean == pytest.approx(45 / 20) and low <= mean <= high
    assert ratio_ci(np.full(4, 2.0), np.ones(4))[1:] == (2.0, 2.0)  # no spread, no width


def test_loss_rows_domains_and_pairing():
    clean = np.array([4.0, 6.0, 8.0, 10.0])
    patched = clean + np.array([2.0, 2.0, 4.0, 4.0])
    counts = np.array([2, 2, 4, 4])
    df = loss_rows(clean, patched, counts, ["a", "a", "b", "b"], n_bootstrap=200)
    assert df.domain.tolist() == ["a", "b", "all"]
    a = df.set_index("domain").loc["a"]
    assert a.clean_loss == pytest.approx(2.5) and a.delta_loss == pytest.approx(1.0)
    assert a.delta_loss_low == a.delta_loss_high == pytest.approx(1.0)  # paired: constant Δ
    assert a.patched_ppl == pytest.approx(math.exp(3.5))
    assert df.set_index("domain").loc["all"].n_tokens == 12


@pytest.mark.parametrize("kw, message", [
    ({"mode": "both"}, "--mode: unknown value 'both'"),
    ({"layers": "most"}, "Bad layer spec"),
    ({"max_tokens": 1}, "--max-tokens must be >= 2"),
    ({"n_segments": 0}, "--n-segments must be >= 1"),
    ({"overflow": "wrap"}, "--overflow: unknown value 'wrap'"),
    ({"batch_size": 0}, "--batch-size must be >= 1"),
])
def test_config_errors(kw, message):
    with pytest.raises(InputError, match=message):
        KVConfig(**kw)


def test_validate_kv():
    validate_kv(KVConfig(layers=">=12", mode="prev"))
    with pytest.raises(InputError, match="above its consumers"):
        validate_kv(KVConfig(layers="lckv"))
    with pytest.raises(InputError, match="30"):  # the zoo knows smollm2's depth: no run dir needed
        validate_kv(KVConfig(layers=">=40"))
    cfg = KVConfig()
    cfg.layers = "x"  # mutated after construction: still caught before any run dir exists
    with pytest.raises(InputError, match="Bad layer spec"):
        validate_kv(cfg)


def test_from_dict_rejects_unknown():
    from geomlens.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        KVConfig.from_dict({"model": "gemma3-270m", "bogus": 1})
    assert KVConfig.from_dict({"model": "gemma3-270m"}).model == "gemma3-270m"
