"""The evidence protocol on a tiny model: planted pairings, and recall against a dense recompute."""

import numpy as np
import pytest
import torch

from geomlens.projection.evidence import (
    TABLE_COLUMNS,
    TokenSets,
    collect_activations,
    evidence_table,
    pair_units,
)


def _sequences(n=6, length=12, d_vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, d_vocab, (length,), generator=g) for _ in range(n)]


@torch.no_grad()
def test_planted_key_value_pairs_give_jaccard_one(gqa_model):
    model = gqa_model
    model.unembed.W_U.copy_(model.W_E.T)  # tied: keys and values are read through the same rows
    for block in model.blocks:
        block.mlp.W_out.copy_(block.mlp.W_in.T)
    table = evidence_table(model, _sequences(), [0, 1], recall_kinds=[], pairs=["kv", "vo"],
                           k_abs=10, n_units=None, n_permutations=199)
    kv = table[table["kind"] == "kv"]
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert np.allclose(kv["value"], 1.0) and (kv["ci_low"] == 1.0).all()
    assert (kv["baseline"] < 0.5).all() and np.allclose(kv["p"], 1 / 200)
    vo = table[table["kind"] == "vo"]  # random W_V, W_O: no planted pairing
    assert (vo["value"] < 0.5).all() and (vo["n_units"] == 32).all()


@torch.no_grad()
def test_recall_equals_dense_recompute(gqa_model):
    model, seqs = gqa_model, _sequences()
    acts = collect_activations(model, seqs, [1], n_positions=20, n_active=3, k2=2, seed=4)
    table = evidence_table(model, seqs, [1], recall_kinds=["mlp_out", "v"], pairs=[], k=5, k2=2,
                           n_active=3, n_positions=20, n_permutations=99, seed=4)
    # dense: rerun every position, project every activated vector over the whole vocabulary
    _, cache = model.run_with_cache(torch.stack(seqs))
    W_U, W_E = model.W_U, model.W_E
    hidden = model.ln_final(cache["blocks.1.hook_resid_post"]) @ W_U  # [seq, pos, vocab]
    post, z = cache["blocks.1.mlp.hook_post"], cache["blocks.1.attn.hook_z"].flatten(-2)
    W_V = model.blocks[1].attn._W_V  # [kv_head, d_model, d_head]
    found = {}
    for kind in ("mlp_out", "v"):
        vals = []
        act = acts.active[(1, "mlp" if kind == "mlp_out" else "attn")]
        for row, top in zip(acts.hidden_top[1], act):
            # locate the position by its hidden-state top tokens and activations
            B = set(row.tolist())
            if kind == "mlp_out":
                vecs = model.blocks[1].mlp.W_out[top] @ W_U
            else:
                h, i = top // 8, top % 8
                vecs = W_V[h // 2, :, i] @ W_E.T  # [n_active, vocab]
            A = set(vecs.topk(5, dim=-1).indices.reshape(-1).tolist())
            vals.append(len(A & B) / len(B))
        found[kind] = np.mean(vals)
    for kind in ("mlp_out", "v"):
        assert table.set_index("kind").loc[kind, "value"] == pytest.approx(found[kind])
    # the activations themselves: the top neurons at some position equal the dense top-3
    dense_top = post.flatten(0, 1).topk(3, dim=-1).indices
    assert any(torch.equal(a.sort().values, d.sort().values) for a in acts.active[(1, "mlp")] for d in dense_top)
    dense_hidden = hidden.flatten(0, 1).topk(2, dim=-1).indices
    assert all(any(torch.equal(h, d) for d in dense_hidden) for h in acts.hidden_top[1])
    assert z.shape[-1] == 32


def test_token_sets_match_dense_topk(gqa_model):
    model = gqa_model
    sets = TokenSets(model, k=4, k_abs=6, chunk=3)
    idx = torch.tensor([[5, 1], [0, 5]])
    got = sets.get("mlp_in", 0, idx, "absolute")
    dense = (model.blocks[0].mlp.W_in.T @ model.W_E.T).abs().topk(6, dim=-1).indices
    assert torch.equal(got, dense[idx])
    a, b = pair_units(model, "qk", None, 0)
    assert torch.equal(a, torch.arange(32))  # 4 query heads x d_head 8 read 2 KV heads:
    assert torch.equal(b, torch.cat([torch.arange(8), torch.arange(8), torch.arange(8, 16), torch.arange(8, 16)]))


def test_evidence_figure_and_config(tmp_path, gqa_model):
    from geomlens.errors import InputError
    from geomlens.projection.evidence_command import EvidenceConfig
    from geomlens.projection.figures import plot_evidence

    table = evidence_table(gqa_model, _sequences(), [0, 1], n_positions=20, k=5, k_abs=10,
                           n_units=16, n_permutations=19)
    assert set(table["kind"]) == {"mlp_in", "mlp_gate", "mlp_out", "v", "o", "kv", "vo", "qk"}
    assert ((table["p"] >= 1 / 20) & (table["p"] <= 1)).all()
    assert plot_evidence(table, tmp_path / "e.png").stat().st_size > 0
    with pytest.raises(InputError):
        EvidenceConfig(n_positions=0)
    with pytest.raises(InputError):
        EvidenceConfig(pairs=["kq"])


@torch.no_grad()
def test_batched_activations_equal_one_sequence_at_a_time(gqa_model):
    # segments of different lengths: right padding never reaches an earlier position
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(0, 50, (n,), generator=g) for n in (5, 12, 3, 9, 12, 7)]
    one = collect_activations(gqa_model, seqs, [0, 1], n_positions=25, n_active=3, seed=2, batch_size=1)
    many = collect_activations(gqa_model, seqs, [0, 1], n_positions=25, n_active=3, seed=2, batch_size=4)
    assert one.n_positions == many.n_positions == 25
    for key in one.active:
        assert torch.equal(one.active[key].sort(-1).values, many.active[key].sort(-1).values), key
    for layer in (0, 1):
        assert torch.equal(one.hidden_top[layer], many.hidden_top[layer])
