"""`geomlens analyze` end to end on smollm2-135m (2 segments per domain, 32 tokens)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from geomlens.analysis import AnalyzeConfig, analyze_tokens
from geomlens.cli import main
from geomlens.data import load_corpus, tokenize_segments

pytestmark = pytest.mark.integration


def test_analyze_cli_on_smollm2(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["analyze", "--model", "smollm2-135m", "--n-segments", "2", "--max-tokens", "32",
                 "--n-bootstrap", "50", "--n-permutations", "2", "--control-positions", "32",
                 "--trajectory-segments", "1", "--layer-lens-positions", "16", "--out", str(out)])
    assert code == 0
    headline = capsys.readouterr().out
    assert "NDCG@full" in headline and "W_E = W_U" in headline  # tied: one row per hidden state
    for name in ("summary.json", "per_segment.csv", "per_token.parquet", "controls.csv",
                 "per_layer.csv", "table61.md", "config.json", "env.json", "done"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tied_embeddings"] is True
    assert summary["info"]["target_alias"]["W_U"] == "W_E"  # tied: W_U reuses W_E's numbers
    assert summary["info"]["ndcg_full_error_bound_max"] < 0.05
    assert len(summary["results"]) == 2 * 2 * 6 + 1  # + the uniform reference (last)
    uniform = summary["results"].pop()
    assert uniform["score"] == "uniform" and 0.3 < uniform["overall"]["jsd"]["mean"] < math.log(2)
    seg = pd.read_csv(out / "per_segment.csv")
    assert seg["domain"].nunique() == 5 and seg["segment"].nunique() == 10
    by = {(r["hidden"], r["target"], r["score"]): r for r in summary["results"]}
    dot = by[("ln_final", "W_E", "dot")]["overall"]
    assert dot["ndcg@full"]["mean"] > 0.999 and dot["jsd"]["mean"] < 1e-3  # dot = the logits
    for r in summary["results"]:
        assert set(r["per_domain"]) == set(seg["domain"])
        assert 0 <= r["overall"]["jsd"]["mean"] <= math.log(2)
        assert r["controls"]["permutation"]["ndcg@full"]["p_value"] >= 1 / 3
        assert r["temperature"] > 0 and 0 <= r["overall"]["jsd_calibrated"]["mean"] <= math.log(2)
    assert by[("ln_final", "W_E", "dot")]["temperature"] == pytest.approx(1.0, rel=2e-2)
    # distance agrees with p far better than a shuffled vocabulary
    neg = by[("ln_final", "W_E", "neg_dist")]["controls"]["permutation"]["ndcg@full"]
    assert neg["observed"] > neg["null_mean"] + 0.1
    assert pd.read_csv(out / "per_layer.csv")["layer"].nunique() == 30


@torch.no_grad()
def test_neg_sq_dist_is_logit_minus_norm_term(smollm2):
    """Tied weights: -|h-e|^2 = 2 h.e - |e|^2 - |h|^2, so ranking by it equals ranking by
    2*logit - |e|^2; check the pipeline's neg_sq_dist top-1 against that direct formula."""
    texts = load_corpus("news", n_segments=1)["text"]
    seqs = tokenize_segments(smollm2.tokenizer, texts, max_tokens=16)
    cfg = AnalyzeConfig(model="smollm2-135m", hidden=["ln_final"], target=["W_E"],
                        scores=["neg_sq_dist", "dot"], controls=False, trajectories=False,
                        spearman=False, keep_per_token=True)
    res = analyze_tokens(smollm2, seqs, cfg)
    _, cache = smollm2.run_with_cache(seqs[0][None], names_filter="unembed.hook_in")
    h = cache["unembed.hook_in"][0]
    W_E = smollm2.W_E
    direct = (2 * h @ W_E.T - (W_E**2).sum(-1)).argmax(-1)
    logits_top = smollm2(seqs[0][None])[0].argmax(-1)
    tok = res.per_token
    sq = tok[tok.score == "neg_sq_dist"].sort_values("pos")
    np.testing.assert_array_equal(sq["top1"].to_numpy(), (direct == logits_top).float().numpy())
