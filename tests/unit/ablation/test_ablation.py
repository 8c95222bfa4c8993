"""Hook-level ablations and their metrics, on the tiny model."""


import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from helpers import build_model
from scipy.spatial.distance import cdist
from sklearn.metrics import ndcg_score

from geomlens.ablation import (
    AblateConfig,
    Condition,
    ablation_hooks,
    ablation_table,
    derangement,
    sweep_conditions,
)
from geomlens.ablation.ablate import mean_setter, resample_setter
from geomlens.ablation.evaluate import agreement, next_token_ce
from geomlens.ablation.figures import ablation_heatmap
from geomlens.ablation.sweep import conditions_for
from geomlens.errors import ConfigError, InputError


def _tokens(batch=4, pos=7, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 50, (batch, pos), generator=g)


def _all_valid(tokens):
    return torch.ones(tokens.shape, dtype=torch.bool)


@torch.no_grad()
def test_zero_attn_last_layer_equals_manual_forward(tiny_model):
    tokens = _tokens()
    last = tiny_model.cfg.n_layers - 1
    _, cache = tiny_model.run_with_cache(tokens)
    block = tiny_model.blocks[last]
    pre = cache[f"blocks.{last}.hook_resid_pre"]
    post = pre + block.mlp(block.ln2(pre))  # no attention: resid_mid = resid_pre
    manual = tiny_model.unembed(tiny_model.ln_final(post))
    hooks = ablation_hooks([last], "attn_out", "zero", _all_valid(tokens))
    torch.testing.assert_close(tiny_model.run_with_hooks(tokens, fwd_hooks=hooks), manual)


@torch.no_grad()
def test_zero_attn_layer0_equals_manual_then_rest_of_model(tiny_model):
    tokens = _tokens()
    _, cache = tiny_model.run_with_cache(tokens)
    pre = cache["blocks.0.hook_resid_pre"]
    block = tiny_model.blocks[0]
    post = pre + block.mlp(block.ln2(pre))
    manual = tiny_model(post, start_at_layer=1, tokens=tokens)
    hooks = ablation_hooks([0], "attn_out", "zero", _all_valid(tokens))
    torch.testing.assert_close(tiny_model.run_with_hooks(tokens, fwd_hooks=hooks), manual)


@torch.no_grad()
def test_zero_mlp_last_layer_equals_subtracting_it(tiny_model):
    tokens = _tokens()
    last = tiny_model.cfg.n_layers - 1
    _, cache = tiny_model.run_with_cache(tokens)
    post = cache[f"blocks.{last}.hook_resid_post"] - cache[f"blocks.{last}.hook_mlp_out"]
    manual = tiny_model.unembed(tiny_model.ln_final(post))
    hooks = ablation_hooks([last], "mlp_out", "zero", _all_valid(tokens))
    torch.testing.assert_close(tiny_model.run_with_hooks(tokens, fwd_hooks=hooks), manual)
    both = ablation_hooks([0, 1], "both", "zero", _all_valid(tokens))
    assert [name for name, _ in both] == ["blocks.0.hook_attn_out", "blocks.0.hook_mlp_out",
                                          "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out"]


@torch.no_grad()
def test_mean_ablation_keeps_the_valid_mean(tiny_model):
    tokens = _tokens()
    lengths = torch.tensor([7, 3, 5, 7])
    valid = torch.arange(7)[None, :] < lengths[:, None]
    seen = {}

    def record(name):
        def fn(t, *, hook):
            seen[name] = t.clone()
            return t
        return fn

    hooks = [("blocks.0.hook_mlp_out", record("before"))]
    hooks += ablation_hooks([0], "mlp_out", "mean", valid)
    hooks += [("blocks.0.hook_mlp_out", record("after"))]
    tiny_model.run_with_hooks(tokens, fwd_hooks=hooks)
    before, after = seen["before"], seen["after"]
    torch.testing.assert_close(after[valid].mean(0), before[valid].mean(0))
    assert torch.allclose(after[valid], after[valid][0].expand_as(after[valid]))  # constant
    torch.testing.assert_close(after[valid][0], before[valid].double().mean(0).float())
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(mean_setter(x, torch.ones(2, 3, dtype=torch.bool)).mean((0, 1)), x.mean((0, 1)))


@torch.no_grad()
def test_resample_identity_is_noop_and_derangement_moves_rows(tiny_model):
    tokens = _tokens()
    valid = _all_valid(tokens)
    clean = tiny_model(tokens)
    for comp in ("attn_out", "mlp_out", "both"):
        hooks = ablation_hooks([0, 1], comp, "resample", valid, perm=torch.arange(4))
        torch.testing.assert_close(tiny_model.run_with_hooks(tokens, fwd_hooks=hooks), clean)
    x = torch.randn(3, 5, 2)
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    perm = torch.tensor([1, 2, 0])
    out = resample_setter(x, valid, perm=perm)
    torch.testing.assert_close(out[0, :2], x[1, :2])  # row 0 takes row 1 where row 1 is valid
    torch.testing.assert_close(out[0, 2], x[valid].mean(0))  # ... and the valid mean after it
    torch.testing.assert_close(out[2], x[0])


def test_derangement_is_seeded_permutation_without_fixed_points():
    for n in (2, 3, 8):
        perm = derangement(n, generator=torch.Generator().manual_seed(0))
        assert sorted(perm.tolist()) == list(range(n))
        assert (perm != torch.arange(n)).all()
        again = derangement(n, generator=torch.Generator().manual_seed(0))
        assert torch.equal(perm, again)
    with pytest.raises(ValueError):
        derangement(1, generator=torch.Generator())


@pytest.mark.parametrize("k", [1, 5, 10])
def test_agreement_against_sklearn_ndcg_and_cdist(k):
    g = torch.Generator().manual_seed(1)
    h, W_E = torch.randn(5, 8, generator=g), torch.randn(50, 8, generator=g)
    logits = torch.randn(5, 50, generator=g).mul(3)
    d = cdist(h.numpy().astype(np.float64), W_E.numpy().astype(np.float64))
    ndcg, top1 = agreement(h, logits, W_E, k=k, chunk_size=7)
    gains = 2.0 ** logits.softmax(-1).double().numpy() - 1.0  # sklearn's gain is linear in y_true
    ref = [ndcg_score(gains[i : i + 1], -d[i : i + 1], k=k) for i in range(5)]
    np.testing.assert_allclose(ndcg.numpy(), ref, rtol=1e-5)
    assert ((ndcg >= 0) & (ndcg <= 1 + 1e-6)).all()
    np.testing.assert_array_equal(top1.numpy(), (d.argmin(1) == logits.argmax(-1).numpy()).astype(float))
    # property: if p is a decreasing function of the distance, the ranking is ideal -> NDCG = 1
    ideal, agree = agreement(h, -torch.from_numpy(d).float(), W_E, k=k)
    torch.testing.assert_close(ideal, torch.ones(5))
    torch.testing.assert_close(agree, torch.ones(5))


def test_next_token_ce_matches_torch_distributions():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 50, generator=g)
    tokens = torch.randint(0, 50, (2, 5), generator=g)
    lengths = torch.tensor([5, 3])
    total, n = next_token_ce(logits, tokens, lengths)
    dist = torch.distributions.Categorical(logits=logits[:, :-1])
    nll = -dist.log_prob(tokens[:, 1:])
    ref = nll[0, :4].sum() + nll[1, :2].sum()
    assert n == 6 and np.isclose(total, float(ref), rtol=1e-5)


def test_sweep_table_rows_and_clean_reference(tiny_model):
    tokens = _tokens(batch=3, pos=6)
    conds = sweep_conditions(range(tiny_model.cfg.n_layers))
    table, clean = ablation_table(tiny_model, tokens, conds, method="zero", k=10)
    assert len(table) == tiny_model.cfg.n_layers * 2
    assert list(table.columns) == ["layer", "component", "method", "loss", "delta_loss", "metric",
                                   "delta_metric", "top1_agree", "delta_top1_agree", "n_tokens"]
    assert sorted(zip(table.layer, table.component)) == [(0, "attn_out"), (0, "mlp_out"),
                                                         (1, "attn_out"), (1, "mlp_out")]
    np.testing.assert_allclose(table.delta_loss, table.loss - clean["loss"], rtol=1e-6)
    np.testing.assert_allclose(table.delta_metric, table.metric - clean["metric"], rtol=1e-6)
    # clean numbers against independent references
    with torch.no_grad():
        logits, cache = tiny_model.run_with_cache(tokens)
        ref_loss = tiny_model(tokens, return_type="loss")
    assert np.isclose(clean["loss"], float(ref_loss), rtol=1e-5)
    h = cache["unembed.hook_in"].reshape(-1, 32).numpy().astype(np.float64)
    d = cdist(h, tiny_model.W_E.detach().numpy().astype(np.float64))
    gains = 2.0 ** logits.softmax(-1).reshape(-1, 50).double().numpy() - 1.0
    ref_ndcg = np.mean([ndcg_score(gains[i : i + 1], -d[i : i + 1], k=10) for i in range(len(d))])
    assert np.isclose(clean["metric"], ref_ndcg, rtol=1e-5) and clean["n_tokens"] == 18
    # the zero ablation is deterministic: a second run gives the same table
    again, _ = ablation_table(tiny_model, tokens, conds, method="zero", k=10)
    np.testing.assert_array_equal(table.loss, again.loss)


def test_resample_and_mean_tables_and_seed(tiny_model):
    seqs = [t[:n] for s in (0, 1) for t, n in zip(_tokens(batch=3, pos=6, seed=s), (6, 4, 5))]
    cond = [Condition((0, 1), "both")]
    t1, _ = ablation_table(tiny_model, seqs, cond, method="resample", seed=3, batch_size=3)
    t2, _ = ablation_table(tiny_model, seqs, cond, method="resample", seed=3, batch_size=3)
    assert t1.layer.tolist() == ["0,1"] and t1.loss.tolist() == t2.loss.tolist()
    tm, clean = ablation_table(tiny_model, seqs, cond, method="mean", batch_size=3)
    assert tm.n_tokens.tolist() == [30] and clean["n_tokens"] == 30  # (6 + 4 + 5) x 2 batches
    assert clean["n_sequences"] == 6
    assert np.isfinite(tm.loss).all() and np.isfinite(t1.metric).all()


def test_config_validation_and_conditions():
    with pytest.raises(InputError):
        AblateConfig(component="resid")
    with pytest.raises(InputError):
        AblateConfig(method="noise")
    with pytest.raises(InputError):
        AblateConfig(layers=[-1])
    with pytest.raises(InputError):
        AblateConfig(method="resample", batch_size=1)
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):  # an error, not dropped
        AblateConfig.from_dict({"layers": [0, 1], "sweep": True, "bogus": 1})
    cfg = AblateConfig.from_dict({"layers": [0, 1], "sweep": True})
    assert [c.label for c in conditions_for(cfg, 2)] == [0, 0, 1, 1]
    assert conditions_for(AblateConfig(layers=[0, 1], component="both"), 2) == [Condition((0, 1), "both")]
    assert len(conditions_for(AblateConfig(sweep=True), 3)) == 6
    with pytest.raises(InputError):
        conditions_for(AblateConfig(layers=[5]), 2)


def test_heatmap_figure(tiny_model, tmp_path):
    tokens = _tokens(batch=2, pos=5)
    table, _ = ablation_table(build_model(), tokens, sweep_conditions([0, 1]), method="zero")
    for value in ("delta_loss", "delta_metric"):
        fig = ablation_heatmap(table, value=value)
        ax = fig.axes[0]
        assert ax.get_title() == value and [t.get_text() for t in ax.get_yticklabels()] == ["0", "1"]
        annotated = sorted(float(t.get_text()) for t in ax.texts)
        assert annotated == pytest.approx(sorted(table[value]), rel=1e-2, abs=1e-3)  # 3 significant digits
        plt.close(fig)
    assert list(tmp_path.iterdir()) == []  # a Figure, no file
    with pytest.raises(InputError):
        ablation_heatmap(table.drop(columns="component"))
