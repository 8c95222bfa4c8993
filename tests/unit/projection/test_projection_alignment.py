"""Kernelised Pearson against explicit projections; alignment recovers a planted permutation."""

import numpy as np
import pytest
import torch
from helpers import build_model
from scipy.stats import pearsonr
from transformer_lens import HookedTransformer

from geomlens.data.token_map import ATTRIBUTE, TokenMap
from geomlens.projection import EmbeddingGram, align_models, shared_vocabulary
from geomlens.projection.alignment import match_layers


def test_gram_pearson_equals_explicit_projections(one_thread):
    a, b = build_model(d_model=32, d_head=8), build_model(d_model=16, d_head=4, seed=1)
    assert a.cfg.d_model != b.cfg.d_model and a.cfg.d_vocab == b.cfg.d_vocab == 50
    X, Y = a.blocks[0].mlp.W_in.T.detach(), b.blocks[1].mlp.W_out.detach()  # [64, 32], [64, 16]
    gram = EmbeddingGram.from_token_matrices(a.W_E.detach(), b.W_U.T.detach())
    C = gram.pearson(X, Y).numpy()
    P = (X.double() @ a.W_E.T.double()).detach().numpy()  # explicit projections [n, vocab]
    Q = (Y.double() @ b.W_U.double()).detach().numpy()
    ref = np.corrcoef(P, Q)[: len(P), len(P):]
    np.testing.assert_allclose(C, ref, rtol=1e-9, atol=1e-9)
    assert C[3, 7] == pytest.approx(pearsonr(P[3], Q[7]).statistic, abs=1e-9)


def test_identity_gram_is_raw_pearson():
    X, Y = torch.randn(5, 12), torch.randn(4, 12)
    C = EmbeddingGram.identity(12).pearson(X, Y).numpy()
    ref = np.corrcoef(X.double().numpy(), Y.double().numpy())[:5, 5:]
    np.testing.assert_allclose(C, ref, rtol=1e-9, atol=1e-12)


def test_permuted_gram_equals_permuted_tokens():
    Ea, Eb, perm = torch.randn(40, 6), torch.randn(40, 5), torch.randperm(40)
    from geomlens.projection.gram import centred

    k = EmbeddingGram.from_token_matrices(Ea, Eb)
    kp = k.with_permutation(centred(Ea), centred(Eb), perm)
    ref = EmbeddingGram.from_token_matrices(Ea, Eb[perm])
    torch.testing.assert_close(kp.K_ab, ref.K_ab)
    torch.testing.assert_close(kp.K_bb, ref.K_bb)


def _permuted_copy(model, layer_perm, neuron_perms):
    """Block l of the copy is block layer_perm[l] of ``model`` with its MLP neurons permuted."""
    sd, new = model.state_dict(), {}
    for key, v in sd.items():
        if key.startswith("blocks."):
            _, layer, *rest = key.split(".")
            src = int(layer_perm[int(layer)])
            v = sd[".".join(["blocks", str(src), *rest])]
            P = neuron_perms[src]
            if rest[-1] in ("W_in", "W_gate"):
                v = v[:, P]
            elif rest[-1] in ("b_in", "W_out"):
                v = v[P]
        new[key] = v
    copy = HookedTransformer(model.cfg)
    copy.load_state_dict(new)
    return copy.eval()


@pytest.mark.parametrize("reduce", ["mean", "best"])
def test_alignment_recovers_layer_and_neuron_permutation(reduce, one_thread):
    model = build_model(n_layers=4)
    g = torch.Generator().manual_seed(1)
    layer_perm = torch.randperm(4, generator=g)
    neuron_perms = {i: torch.randperm(model.cfg.d_mlp, generator=g) for i in range(4)}
    copy = _permuted_copy(model, layer_perm, neuron_perms)
    al = align_models(model, copy, reduce=reduce, n_permutations=3)
    expected = sorted((int(layer_perm[lb]), lb) for lb in range(4))
    for key in ("mlp_in", "mlp_gate", "mlp_out", "mean"):
        assert match_layers(al.scores[key])[0] == expected
        assert match_layers(al.raw_scores[key])[0] == expected  # same d_model: baseline too
    for (kind, la, lb), cols in al.neuron_matches.items():
        # neuron j of copy layer lb is neuron P[j] of model layer la: model neuron i <-> P⁻¹[i]
        inverse = torch.argsort(neuron_perms[la])
        np.testing.assert_array_equal(cols, inverse.numpy())
    np.testing.assert_allclose(al.neurons["neuron_corr"], 1.0, rtol=1e-9)
    assert (al.neurons["topk_overlap"] == 1.0).all()
    table = al.layer_table()
    emb = table[table.space == "embedding"]
    assert (emb["p_value"] == 0.25).all()  # 3 permutations, observed above all of them
    assert (emb["matched_score"] > emb["null_mean"]).all()


def test_shared_vocabulary_through_token_maps(one_thread):
    """A reduced-vocabulary model (kept ids) against a full one: rows pair the same token."""
    full, small = build_model(d_vocab=50), build_model(d_vocab=8)
    kept = torch.tensor([12, 3, 40, 7, 25, 0, 33])  # model id i <-> tokenizer id kept[i]; 7 = OOV
    setattr(small, ATTRIBUTE, TokenMap(tokenizer=None, d_vocab=8, kept=kept, oov_id=7))
    shared = shared_vocabulary(full, small)
    assert len(shared.rows_a) == 7
    np.testing.assert_array_equal(shared.rows_a.numpy(), kept[shared.rows_b].numpy())
    assert 7 not in shared.rows_b.tolist()
    al = align_models(full, small, n_permutations=2)
    assert al.scores["mean"].shape == al.raw_scores["mean"].shape == (2, 2)


def test_layer_scores_equal_direct_block_means_and_hit_rates():
    from geomlens.projection.alignment import hungarian_hits, layer_scores, row_hits

    g = torch.Generator().manual_seed(0)
    Ea, Eb = torch.randn(30, 4, generator=g), torch.randn(30, 5, generator=g)
    k = EmbeddingGram.from_token_matrices(Ea, Eb)
    ua = [k.unit_a(torch.randn(n, 4, generator=g)) for n in (3, 2)]
    ub = [k.unit_b(torch.randn(n, 5, generator=g)) for n in (4, 3, 2)]
    for reduce in ("mean", "best"):
        S = layer_scores(k, ua, ub, reduce)
        for i, j in np.ndindex(S.shape):
            C = k.cross(ua[i], ub[j]).abs()
            ref = C.mean() if reduce == "mean" else 0.5 * (C.max(1).values.mean() + C.max(0).values.mean())
            assert S[i, j] == pytest.approx(float(ref), rel=1e-12)
    S32 = layer_scores(k, ua, ub, dtype=torch.float32)
    np.testing.assert_allclose(S32, layer_scores(k, ua, ub), rtol=1e-5)
    # rows 0 and 2 peak on the diagonal, row 1 peaks on column 0; the global matching is the identity
    S = np.array([[0.9, 0.1, 0.0], [0.8, 0.7, 0.0], [0.1, 0.2, 0.5]])
    assert row_hits(S) == pytest.approx(2 / 3) and hungarian_hits(S) == 1.0
    assert np.isnan(row_hits(np.ones((2, 3))))


def test_layer_table_hit_p_against_direct_count(make_run):
    from geomlens.models import load_model
    from geomlens.projection.alignment import hungarian_hits, row_hits

    a = load_model(str(make_run("a", seed=0)[0]))
    b = load_model(str(make_run("b", seed=1)[0]))
    al = align_models(a, b, n_permutations=30, n_neuron_null=1)
    row = al.layer_table().set_index(["kind", "space"]).loc[("mean", "embedding")]
    hits = al.spaces["embedding"].null_hits["mean"]
    assert hits.shape == (30, 2) and row["n_permutations"] == 30
    S = al.scores["mean"]
    assert row["row_hit_rate"] == row_hits(S) and row["identity_accuracy"] == hungarian_hits(S)
    assert row["row_hit_p"] == pytest.approx((1 + np.sum(hits[:, 0] >= row_hits(S))) / 31)
    assert row["identity_p"] == pytest.approx((1 + np.sum(hits[:, 1] >= hungarian_hits(S))) / 31)


def test_raw_baseline_gets_its_own_permutation_count(make_run):
    from geomlens.models import load_model

    a = load_model(str(make_run("a", seed=0)[0]))
    b = load_model(str(make_run("b", seed=1)[0]))
    al = align_models(a, b, n_permutations=12, raw_permutations=3, n_neuron_null=5)
    table = al.layer_table().set_index(["kind", "space"])
    assert table.loc[("mean", "embedding"), "n_permutations"] == 12
    assert table.loc[("mean", "raw"), "n_permutations"] == 3
    assert len(al.spaces["raw"].null_grams["mlp_in"]) == 3


def test_kinds_with_the_same_token_matrices_share_one_permuted_gram(gqa_model):
    from geomlens.projection.alignment import KindData, _shared_tokens

    E, U = gqa_model.W_E.detach(), gqa_model.W_U.T.detach()
    v = [torch.randn(3, 32)]
    data = {kd: KindData(kind=kd, vecs_a=v, vecs_b=v, tokens_a=T, tokens_b=T)
            for kd, T in (("mlp_in", E), ("mlp_gate", E), ("mlp_out", U), ("o", U))}
    assert _shared_tokens(data) == {"mlp_in": "mlp_in", "mlp_gate": "mlp_in", "mlp_out": "mlp_out", "o": "mlp_out"}
