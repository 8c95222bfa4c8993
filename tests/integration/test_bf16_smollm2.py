"""``dtype="bfloat16"`` (the forward's matmuls under bf16 autocast, everything after it in
float32) against float32 on smollm2-135m: every NDCG mean within 1e-3."""

import pytest
import torch

from geomlens.analysis import AnalyzeConfig, analyze_tokens
from geomlens.data import load_corpus, tokenize_segments

pytestmark = pytest.mark.integration

METRICS = ["ndcg@1", "ndcg@10", "ndcg@100", "ndcg@full", "jsd"]


def _means(result):
    df = result.per_segment
    w = df["n_positions"]
    return (df[METRICS].mul(w, axis=0).groupby([df["hidden"], df["score"]]).sum()
            .div(w.groupby([df["hidden"], df["score"]]).sum(), axis=0))


def test_bfloat16_forward_agrees_with_float32(smollm2):
    texts = load_corpus(n_segments=4)["text"]
    seqs = tokenize_segments(smollm2.tokenizer, texts, max_tokens=64)[:16]
    assert sum(len(s) for s in seqs) >= 1000
    base = dict(controls=False, calibrate=False, layer_lens=False, trajectories=False,
                spearman=False, hidden=["ln_final", "resid_post"], target=["W_E"],
                scores=["neg_dist", "cosine", "dot"], batch_size=8, compile=False)
    ref = analyze_tokens(smollm2, seqs, AnalyzeConfig(**base))
    bf = analyze_tokens(smollm2, seqs, AnalyzeConfig(**base, dtype="bfloat16"))
    assert next(smollm2.parameters()).dtype == torch.float32  # the weights stay float32
    diff = (_means(bf) - _means(ref)).abs()
    assert diff.to_numpy().max() > 0  # the forward did run in bf16
    assert diff.to_numpy().max() <= 1e-3, diff.to_string()
