"""The streaming analysis pipeline on the tiny random model (token tensors, no tokenizer)."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import spearmanr

from geomlens.analysis import AnalyzeConfig, analyze_tokens, summarize, table_markdown
from geomlens.errors import InputError
from geomlens.metrics.ranking import ndcg_at_k

LENGTHS = (10, 7, 12, 5, 9, 11)


def _seqs():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 50, (n,), generator=g) for n in LENGTHS]


def _cfg(**kw):
    base = dict(model="tiny", n_bootstrap=100, n_permutations=4, control_positions=25,
                keep_per_token=True, trajectories=False, batch_size=4)
    base.update(kw)
    return AnalyzeConfig(**base)


@pytest.fixture()
def result(tiny_model):
    return analyze_tokens(tiny_model, _seqs(), _cfg(), domains=["a", "a", "b", "b", "b", "a"])


@torch.no_grad()
def test_per_token_metrics_match_independent_reference(tiny_model, result):
    seqs = _seqs()
    tok = result.per_token
    assert len(tok) == sum(LENGTHS) * 2 * 2 * 6
    seq_id, pos = 2, 4
    _, cache = tiny_model.run_with_cache(seqs[seq_id][None])
    logits = tiny_model(seqs[seq_id][None])[0, pos].double()
    p = torch.softmax(logits, -1)
    h = cache["unembed.hook_in"][0, pos].double()
    d = (h[None] - tiny_model.W_E.double()).norm(dim=-1)
    row = tok[(tok.segment == "2") & (tok.pos == pos) & (tok.hidden == "ln_final")
              & (tok.target == "W_E") & (tok.score == "neg_dist")].iloc[0]
    assert row["ndcg@full"] == pytest.approx(ndcg_at_k(-d, p).item(), abs=1e-4)
    assert row["ndcg@10"] == pytest.approx(ndcg_at_k(-d, p, k=10).item(), abs=1e-4)
    q = torch.softmax(-d, -1)
    assert row["jsd"] == pytest.approx(jensenshannon(p.numpy(), q.numpy()) ** 2, abs=1e-5)
    assert row["spearman"] == pytest.approx(spearmanr(-d.numpy(), p.numpy()).statistic, abs=1e-5)
    assert row["top1"] == float(int(d.argmin()) == int(p.argmax()))
    assert row["ndcg_full_err"] == 0.0  # K >= vocab: exact


def test_dot_against_tied_head_is_perfect(result):
    tok = result.per_token
    dot_wu = tok[(tok.target == "W_U") & (tok.score == "dot") & (tok.hidden == "ln_final")]
    np.testing.assert_allclose(dot_wu["ndcg@full"], 1.0, atol=1e-5)  # b_U = 0: dot = logits
    np.testing.assert_allclose(dot_wu["jsd"], 0.0, atol=2e-5)
    np.testing.assert_allclose(dot_wu["top1"], 1.0)
    for m in result.metrics:
        if m.startswith("ndcg") or m in ("top1", "top10"):
            assert tok[m].between(0, 1 + 1e-6).all(), m
    assert tok["jsd"].between(0, math.log(2)).all()


def test_batching_does_not_change_results(tiny_model, result):
    other = analyze_tokens(tiny_model, _seqs(), _cfg(batch_size=1, position_chunk=3),
                           domains=["a", "a", "b", "b", "b", "a"])
    cols = result.metrics
    a = result.per_segment.sort_values(["segment", "hidden", "target", "score"])[cols].to_numpy()
    b = other.per_segment.sort_values(["segment", "hidden", "target", "score"])[cols].to_numpy()
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_controls_and_summary(tiny_model, result):
    ctrl = result.controls
    assert set(ctrl.variant) == {"observed", "permutation", "random_matrix"}
    assert (ctrl[ctrl.variant == "permutation"].groupby(["hidden", "target", "score"]).size() == 4).all()
    assert (ctrl.n_positions == 25).all()
    summary = summarize(result, _cfg(), model_info={"name": "tiny", "tied_embeddings": False})
    assert len(summary["results"]) == 2 * 2 * 6 + 1  # + the uniform reference
    assert summary["results"][-1]["score"] == "uniform"
    for entry in summary["results"][:-1]:
        for m, v in entry["overall"].items():
            assert v["ci_low"] <= v["mean"] + 1e-9 <= v["ci_high"] + 2e-9, m
        assert set(entry["per_domain"]) == {"a", "b"}
        perm = entry["controls"]["permutation"]["ndcg@full"]
        assert 1 / 5 <= perm["p_value"] <= 1.0
    dot = next(e for e in summary["results"] if e["target"] == "W_U" and e["score"] == "dot"
               and e["hidden"] == "ln_final")
    assert dot["controls"]["permutation"]["ndcg@full"]["p_value"] == pytest.approx(1 / 5)
    md = table_markdown(summary)
    assert md.count("\n| tiny |") == 25


def test_trajectory_rows_are_attached(tiny_model):
    res = analyze_tokens(tiny_model, _seqs()[:2], _cfg(trajectories=True, controls=False,
                                                       scores=["dot"], hidden=["ln_final"]))
    traj = res.per_layer_tokens
    assert set(traj.layer) == {0, 1} and set(traj.segment) == {"0", "1"}
    assert len(traj) == (LENGTHS[0] + LENGTHS[1]) * 2


def test_per_token_parquet_streaming(tiny_model, tmp_path):
    import pandas as pd

    path = tmp_path / "pt.parquet"
    res = analyze_tokens(tiny_model, _seqs(), _cfg(controls=False, keep_per_token=False,
                                                   batch_size=2), per_token_path=path)
    assert res.per_token is None
    df = pd.read_parquet(path)
    assert len(df) == sum(LENGTHS) * 24 and df["segment"].nunique() == len(LENGTHS)


@pytest.mark.parametrize("bad", [dict(hidden=["nope"]), dict(gain="log"), dict(ks=[1, 500]),
                                 dict(eps=0.0), dict(scores=[])])
def test_config_validation(bad):
    with pytest.raises(InputError):
        _cfg(**bad)


def test_config_from_dict_rejects_unknown_keys():
    from geomlens.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        AnalyzeConfig.from_dict({"model": "x", "ks": [1, None], "bogus": 3})
    cfg = AnalyzeConfig.from_dict({"model": "x", "ks": [1, None]})
    assert cfg.ks == [1, None]


def test_rank_groups_share_rankings_exactly():
    """The four distance scores rank identically, so computing their rank metrics once from
    -d^2 gives what each score's own ranking gives."""
    from geomlens.analysis.agreement import all_score_metrics, reference, score_metrics
    from geomlens.geometry.scores import get_score, score_parts

    h, e = torch.randn(6, 16), torch.randn(300, 16)
    logits = torch.randn(6, 300) * 3
    ref = reference(logits, topk=64, gain="exp2", spearman=True)
    parts = score_parts(h, e)
    names = ["inv_dist", "softmax_inv_dist", "neg_dist", "neg_sq_dist", "cosine", "dot"]
    shared = all_score_metrics(parts, names, ref, ks=[1, 10, None])
    for name in names:
        spec = get_score(name)
        s = spec.score(parts)
        own = score_metrics(s, spec.q_logits(s), ref, ks=[1, 10, None])
        for k, v in own.items():
            if k == "ndcg_full_err":
                continue
            if k == "ndcg@full":  # tail bins depend on the key's scale: equal within the bounds
                bound = shared[name]["ndcg_full_err"] + own["ndcg_full_err"] + 1e-5
                assert bool(((shared[name][k] - v).abs() <= bound).all()), name
                continue
            torch.testing.assert_close(shared[name][k], v, atol=2e-5, rtol=1e-4, msg=f"{name} {k}")


def test_dot_blocks_slice_one_matmul_per_block():
    """h·e comes from blocks of >= MATMUL_ROWS positions, sliced per chunk, and equals the
    per-chunk product."""
    from geomlens.analysis.scoring import DotBlocks

    g = torch.Generator().manual_seed(0)
    h, e = torch.randn(23, 8, generator=g), torch.randn(50, 8, generator=g)
    dots = DotBlocks({"x": h}, {"E": e}, rows=10)
    for start in range(0, 23, 5):
        stop = min(23, start + 5)
        torch.testing.assert_close(dots.get("x", "E", start, stop), h[start:stop] @ e.T)
        first, block = dots._blocks[("x", "E")]
        assert first == start - start % 10 and len(block) == min(10, 23 - first)
