"""The Table 6.1 headline rows: one −d row per (model, hidden, distinct target), seeds combined
with a Student-t interval over the seed means."""

import numpy as np
import pytest
from scipy import stats

from geomlens.analysis.headline import combine_seeds, format_table, headline_rows


def _summary(name: str, ndcg: float, *, tied: bool, alias_u: str) -> dict:
    def rec(target: str, score: str, value: float) -> dict:
        v = {"mean": value, "ci_low": value - 0.01, "ci_high": value + 0.01}
        return {"hidden": "ln_final", "target": target, "score": score, "n_segments": 10,
                "overall": {"ndcg@full": v, "ndcg@10": v, "top1": v, "jsd": v},
                "controls": {"permutation": {"ndcg@full": {"p_value": 0.001}}}}

    results = [rec(t, s, ndcg if s == "neg_dist" else 1.0)
               for t in ("W_E", "W_U") for s in ("neg_dist", "dot")]
    results.append({"hidden": None, "target": None, "score": "uniform", "n_segments": 10,
                    "overall": {"jsd": {"mean": 0.6, "ci_low": 0.6, "ci_high": 0.6}}})
    return {"model": {"name": name}, "tied_embeddings": tied, "results": results,
            "info": {"target_alias": {"W_E": "W_E", "W_U": alias_u}}}


def test_aliased_target_is_folded_and_distinct_targets_kept():
    tied = headline_rows([_summary("a", 0.9, tied=True, alias_u="W_E")])
    assert [(r["target"], r["tied"]) for r in tied] == [("W_E = W_U", True)]
    untied = headline_rows([_summary("b", 0.4, tied=False, alias_u="W_U")])
    assert [r["target"] for r in untied] == ["W_E", "W_U"]
    assert untied[0]["ndcg@full"]["mean"] == 0.4 and untied[0]["perm_p"] == 0.001
    assert untied[0]["jsd_calibrated"] is None  # a run without calibration


def test_seeds_combine_with_a_t_interval_over_seed_means():
    means = [0.41, 0.45, 0.38]
    rows = [headline_rows([_summary("s", m, tied=False, alias_u="W_U")])[0] for m in means]
    out = combine_seeds(rows, "micro (3 seeds)")
    lo, hi = stats.t.interval(0.95, df=2, loc=np.mean(means), scale=stats.sem(means))
    assert out["ndcg@full"]["mean"] == pytest.approx(np.mean(means))
    assert (out["ndcg@full"]["ci_low"], out["ndcg@full"]["ci_high"]) == pytest.approx((lo, hi))
    assert out["model"] == "micro (3 seeds)" and out["n_seeds"] == 3
    assert combine_seeds(rows[:1], "one")["ndcg@full"] == rows[0]["ndcg@full"]


def test_table_formats():
    rows = headline_rows([_summary("a", 0.9, tied=True, alias_u="W_E")])
    md = format_table(rows, markdown=True).splitlines()
    assert md[0].startswith("| model | tied? | target | NDCG@full") and len(md) == 3
    assert "0.900 [0.890, 0.910]" in md[2] and "| yes |" in md[2]
    text = format_table(rows, with_hidden=True)
    assert "ln_final" in text and "hidden" in text.splitlines()[0]


def test_headline_frame_reads_run_dirs_and_combines_seeds(tmp_path):
    import json

    from geomlens.analysis.headline import headline_frame
    from geomlens.errors import InputError

    paths = []
    for seed, value in enumerate([0.4, 0.5]):
        run = tmp_path / f"s{seed}"
        run.mkdir()
        (run / "summary.json").write_text(json.dumps(_summary("m", value, tied=False, alias_u="W_U")))
        paths.append(run)
    frame = headline_frame({"two seeds": paths, "one": [paths[0] / "summary.json"]})
    assert list(frame["model"]) == ["two seeds", "two seeds", "one", "one"]
    assert frame.iloc[0]["NDCG@full"].startswith("0.450 [")
    with pytest.raises(InputError, match="no summary.json"):
        headline_frame({"x": [tmp_path / "missing"]})
