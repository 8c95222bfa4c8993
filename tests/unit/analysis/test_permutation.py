"""The fast permutation null against the direct computation (the vocabulary re-ranked)."""

import numpy as np
import pytest
import torch

from geomlens import native
from geomlens.analysis import permutation
from geomlens.analysis.agreement import all_score_metrics, pair_metrics, reference
from geomlens.analysis.permutation import PermutationNull, perm_tables
from geomlens.geometry.scores import score_parts

NAMES = ["inv_dist", "softmax_inv_dist", "neg_dist", "neg_sq_dist", "cosine", "dot"]


def _case(d_vocab=300, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, e = torch.randn(n, 16, generator=g), torch.randn(d_vocab, 16, generator=g)
    logits = (h @ e.T) * 0.7 + torch.randn(n, d_vocab, generator=g)  # p related to the scores
    return h, e, logits


def _fast_and_direct(topk, ks, d_vocab=300, n_perm=5):
    h, e, logits = _case(d_vocab)
    ref = reference(logits, topk=topk, gain="exp2")
    e_sq = e.pow(2).sum(-1)
    scored = pair_metrics(ref, h @ e.T, h.pow(2).sum(-1, keepdim=True), e_sq, names=NAMES,
                          ks=ks, eps=1e-6)
    null = PermutationNull(n_perm, seed=3, ks=ks)
    null.add_reference(ref)
    null.add_pair("h", "t", scored, n_rows=len(h))
    fast = {score: sums for _, _, score, sums, _ in null.finish()}
    perms = perm_tables(torch.Generator().manual_seed(3), 16, d_vocab)[0].T[:n_perm]
    parts = score_parts(h, e)
    direct = [all_score_metrics(parts, NAMES, ref, ks=ks, spearman=False, perm=p.long())
              for p in perms]
    return fast, direct


@pytest.mark.parametrize("topk", [16, 300])
def test_fast_null_matches_the_direct_computation(topk):
    ks = [1, 10, None]
    fast, direct = _fast_and_direct(topk, ks)
    for score in NAMES:
        for metric in ("ndcg@1", "ndcg@10", "top1", "top10"):
            want = np.array([d[score][metric].sum().item() for d in direct])
            np.testing.assert_allclose(fast[score][metric], want, atol=1e-4, err_msg=metric)
        want = np.array([d[score]["ndcg@full"].sum().item() for d in direct])
        direct_err = np.array([d[score]["ndcg_full_err"].sum().item() for d in direct])
        gap = np.abs(fast[score]["ndcg@full"] - want)
        assert (gap <= fast[score]["ndcg_full_err"] + direct_err + 1e-4).all(), score
        if topk >= 300:  # the top K is the vocabulary: exact
            np.testing.assert_allclose(fast[score]["ndcg@full"], want, atol=1e-4)
            assert (fast[score]["ndcg_full_err"] == 0).all()


def _buffered_rows(n_perm=32):
    """(p's buffered rows, the first rank group's buffered rows, d_vocab) of `_case`."""
    h, e, logits = _case()
    ks = [1, 10, None]
    ref = reference(logits, topk=16, gain="exp2")
    scored = pair_metrics(ref, h @ e.T, h.pow(2).sum(-1, keepdim=True), e.pow(2).sum(-1),
                          names=NAMES, ks=ks, eps=1e-6)
    null = PermutationNull(n_perm, seed=0, ks=ks)
    null.add_reference(ref)
    null.add_pair("h", "t", scored, n_rows=len(h))
    return null.ref.cat(), next(iter(null.groups.values())).cat(), e.shape[0]


@pytest.mark.skipif(native.library("permnull") is None, reason="no native code")
def test_native_null_terms_match_torch():
    """Bit for bit (products in float32, sums in float64 in the same order)."""
    ref_rows, rows, d_vocab = _buffered_rows()
    permT, pinvT = perm_tables(torch.Generator().manual_seed(0), 32, d_vocab)
    args = dict(gains=ref_rows["gains"], total=ref_rows["total"], heavy=ref_rows["heavy"],
                top=rows["top"], bucket=rows["bucket"], d_lo=rows["d_lo"], d_hi=rows["d_hi"])
    nat = permutation.null_terms(ref_rows, rows, permT, pinvT, [1, 10], 12)
    tor = permutation._null_torch(permT, pinvT, kcut=[1, 10], kx=12, **args)
    assert nat.keys() == tor.keys()
    for name in nat:
        assert torch.equal(nat[name], tor[name]), name


def test_int32_and_uint16_tables_agree():
    """The two widths of the tables (uint16 up to 65,536 tokens, int32 beyond) hold the
    same permutations and give the same null terms."""
    ref_rows, rows, d_vocab = _buffered_rows()
    assert permutation.table_dtype(d_vocab) == torch.uint16
    assert permutation.table_dtype(70_000) == torch.int32
    narrow = perm_tables(torch.Generator().manual_seed(0), 32, d_vocab)
    wide = perm_tables(torch.Generator().manual_seed(0), 32, d_vocab,
                       workspace=torch.empty(2 * d_vocab * 32, dtype=torch.int32))
    assert narrow[0].dtype == torch.uint16 and wide[0].dtype == torch.int32
    for a, b in zip(narrow, wide):
        assert torch.equal(a.long(), b.long())
    out_narrow = permutation.null_terms(ref_rows, rows, *narrow, [1, 10], 12)
    out_wide = permutation.null_terms(ref_rows, rows, *wide, [1, 10], 12)
    for name in out_narrow:
        assert torch.equal(out_narrow[name], out_wide[name]), name


def test_permutations_are_the_draws_of_one_generator():
    """Column i is the i-th torch.randperm of the generator, however the draws are split into
    calls; pinvT inverts permT."""
    gen = torch.Generator().manual_seed(5)
    want = torch.stack([torch.randperm(100, generator=gen) for _ in range(96)])
    a, ainv = perm_tables(torch.Generator().manual_seed(5), 96, 100)
    gen = torch.Generator().manual_seed(5)
    first, second = perm_tables(gen, 16, 100)[0], perm_tables(gen, 80, 100)[0]
    assert torch.equal(a.T.long(), want)
    assert torch.equal(torch.cat([first, second], 1), a)
    torch.testing.assert_close(ainv.long().gather(0, a.long()),
                               torch.arange(100)[:, None].expand(100, 96))


def test_blocks_of_permutations_give_the_same_null(monkeypatch):
    """Blocks of 32 with a trimmed last block (40 = 32 + 16 drawn, 8 used) = one block of 48."""
    h, e, logits = _case()
    ks = [1, 10, None]
    ref = reference(logits, topk=16, gain="exp2")
    scored = pair_metrics(ref, h @ e.T, h.pow(2).sum(-1, keepdim=True), e.pow(2).sum(-1),
                          names=NAMES, ks=ks, eps=1e-6)

    def null_sums():
        null = PermutationNull(40, seed=5, ks=ks)
        null.add_reference(ref)
        null.add_pair("h", "t", scored, n_rows=len(h))
        return {score: sums for _, _, score, sums, _ in null.finish()}

    one = null_sums()
    assert permutation.block_size(40, 300) == 48
    entry = 2 * torch.empty(0, dtype=permutation.table_dtype(300)).element_size()
    monkeypatch.setattr(permutation, "TABLE_BYTES", 32 * entry * 300)
    assert permutation.block_size(40, 300) == 32
    blocks = null_sums()
    for score in NAMES:
        for metric, values in one[score].items():
            np.testing.assert_allclose(blocks[score][metric], values, rtol=1e-6, err_msg=metric)
