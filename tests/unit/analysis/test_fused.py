"""The fused (torch.compile) and eager paths of the per-chunk kernels give the same numbers, and
reusing the LM logits as h·e gives what the matmul gives."""

import pytest
import torch

from geomlens.analysis.agreement import pair_metrics, reference
from geomlens.fused import Fused

NAMES = ["inv_dist", "softmax_inv_dist", "neg_dist", "neg_sq_dist", "cosine", "dot"]


def _pair(fused, *, tied=False, n=9, d_vocab=300):
    g = torch.Generator().manual_seed(0)
    h, e = torch.randn(n, 16, generator=g), torch.randn(d_vocab, 16, generator=g)
    logits = h @ e.T if tied else torch.randn(n, d_vocab, generator=g) * 2
    ref = reference(logits, topk=32, gain="exp2", spearman=True, fused=fused)
    dot = logits if tied else h @ e.T
    return pair_metrics(ref, dot, h.pow(2).sum(-1, keepdim=True), e.pow(2).sum(-1), names=NAMES,
                        ks=[1, 10, None], eps=1e-6, dot_is_logits=tied, fused=fused).metrics


@pytest.mark.parametrize("tied", [False, True])
def test_compiled_matches_eager(tied):
    fused = Fused(True)
    compiled = _pair(fused, tied=tied)
    eager = _pair(Fused(False), tied=tied)
    if not fused.enabled:
        pytest.skip("torch.compile is unavailable here (the eager fallback ran)")
    for name in NAMES:
        for metric, value in eager[name].items():
            torch.testing.assert_close(compiled[name][metric], value, atol=2e-6, rtol=1e-5,
                                       equal_nan=True, msg=f"{name} {metric}")


def test_logits_reuse_matches_the_matmul():
    """The dot group from p's own summary equals the dot group ranked on its own."""
    reused = _pair(Fused(False), tied=True)
    g = torch.Generator().manual_seed(0)
    h, e = torch.randn(9, 16, generator=g), torch.randn(300, 16, generator=g)
    logits = h @ e.T
    ref = reference(logits, topk=32, gain="exp2", spearman=True)
    direct = pair_metrics(ref, logits.clone(), h.pow(2).sum(-1, keepdim=True), e.pow(2).sum(-1),
                          names=NAMES, ks=[1, 10, None], eps=1e-6).metrics
    for name in NAMES:
        for metric in ("ndcg@1", "ndcg@10", "top1", "top10", "spearman", "jsd"):
            torch.testing.assert_close(reused[name][metric], direct[name][metric], atol=2e-5,
                                       rtol=1e-4, msg=f"{name} {metric}")
        gap = (reused[name]["ndcg@full"] - direct[name]["ndcg@full"]).abs()
        assert bool((gap <= reused[name]["ndcg_full_err"] + direct[name]["ndcg_full_err"] + 1e-5).all())
