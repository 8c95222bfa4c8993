"""Turn an `AnalysisResult` into summary.json content and the Table 6.1 Markdown table.

Means and 95% CIs are over segments: each segment's metric is first averaged over its positions,
then segments are resampled with replacement (percentile bootstrap, seeded by ``cfg.seed``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from geomlens.analysis.agreement import greater_is_better
from geomlens.analysis.calibration_report import (
    add_calibration,
    calibration_definitions,
    uniform_record,
)
from geomlens.analysis.capture import hidden_hook_names
from geomlens.analysis.config import AnalyzeConfig
from geomlens.geometry.scores import SCORES
from geomlens.metrics.ranking import GAINS
from geomlens.metrics.stats import bootstrap_ci, permutation_p_value

KEYS = ["hidden", "target", "score"]


def _ci_block(frame: pd.DataFrame, metrics: list[str], cfg: AnalyzeConfig) -> dict[str, dict]:
    mean, lo, hi = bootstrap_ci(frame[metrics].to_numpy(dtype=np.float64),
                                n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    return {m: {"mean": float(mean[i]), "ci_low": float(lo[i]), "ci_high": float(hi[i])}
            for i, m in enumerate(metrics)}


def _controls_block(controls: pd.DataFrame, key: tuple, metrics: list[str]) -> dict[str, Any]:
    if controls.empty:
        return {}
    sel = controls[(controls.hidden == key[0]) & (controls.target == key[1])
                   & (controls.score == key[2])]
    obs = sel[sel.variant == "observed"]
    perm = sel[sel.variant == "permutation"]
    rand = sel[sel.variant == "random_matrix"]
    out: dict[str, Any] = {"n_positions": int(obs.n_positions.iloc[0]) if len(obs) else 0,
                           "n_permutations": int(len(perm)), "permutation": {},
                           "random_matrix": {}}
    for m in metrics:
        if m not in sel.columns or obs.empty:
            continue
        observed = float(obs[m].iloc[0])
        null = perm[m].to_numpy(dtype=np.float64) if len(perm) else np.array([])
        if len(null) and not np.isnan(null).all():
            out["permutation"][m] = _permutation_block(m, observed, null, obs, perm)
        if len(rand):
            out["random_matrix"][m] = {"observed": observed, "random": float(rand[m].iloc[0])}
    return out


def _permutation_block(m: str, observed: float, null: np.ndarray, obs: pd.DataFrame,
                       perm: pd.DataFrame) -> dict[str, Any]:
    """Null mean/std and the one-sided p-value of metric ``m``. NDCG@full is bracketed, so a
    permutation counts as at least as good when its upper bound reaches the observed lower
    bound (a conservative p-value)."""
    greater = greater_is_better(m)
    margin = np.zeros_like(null)
    if m == "ndcg@full" and "ndcg_full_err" in perm.columns:
        margin = (perm["ndcg_full_err"].to_numpy(dtype=np.float64)
                  + float(obs["ndcg_full_err"].iloc[0]))
    block = {
        "observed": observed, "null_mean": float(null.mean()),
        "null_std": float(null.std(ddof=1)) if len(null) > 1 else 0.0,
        "p_value": permutation_p_value(observed, null + (margin if greater else -margin),
                                       greater=greater),
        "alternative": "greater" if greater else "less",
    }
    if m == "ndcg@full" and "ndcg_full_err" in perm.columns:
        block["null_error_bound_max"] = float(perm["ndcg_full_err"].max())
    return block


def definitions(cfg: AnalyzeConfig, result: Any, n_layers: int | None = None) -> dict:
    """Exact definitions of every quantity in the summary."""
    hooks = hidden_hook_names(n_layers) if n_layers else {}
    return {
        "p": "softmax of the model's LM-head logits at the position (next-token distribution)",
        "hidden": {h: hooks.get(h, h) for h in cfg.hidden},
        "hidden_note": "ln_final = unembed.hook_in = final norm output incl. its weight "
                       "(= HF hidden_states[-1]); resid_post = last block's resid_post (pre-norm)",
        "target": {"W_E": "rows of W_E", "W_U": "columns of W_U (rows of W_U.T)"},
        "scores": {name: SCORES.describe(name) for name in cfg.scores},
        "d": "Euclidean distance |h - e| via |h|^2 - 2 h.e + |e|^2 clamped at 0",
        "rank_groups": "scores of one rank group rank the vocabulary identically (the distance "
                       "scores are decreasing in d): their rank metrics are computed once",
        "eps": cfg.eps,
        "ndcg": "DCG@k/IDCG@k, DCG@k = sum_{i<=k} gain(p_sigma(i))/log2(i+1), sigma sorts by "
                "score, ideal sorts by p",
        "gain": GAINS.describe(cfg.gain),
        "ks": ["full" if k is None else k for k in cfg.ks],
        "ndcg_full": f"exact top-{cfg.topk_exact} ranks; the tail is split into score buckets "
                     "with exact counts, each bracketed by its discount range; the midpoint of "
                     "the NDCG interval is reported, its half-width is the error bound",
        "ndcg_full_error_bound": {"max": result.info["ndcg_full_error_bound_max"],
                                  "mean": result.info["ndcg_full_error_bound_mean"]},
        "jsd": f"JSD(p || q), q = the score's distribution (softmax(score) except inv_dist) in {cfg.jsd_base} "
               f"(max {'ln 2' if cfg.jsd_base == 'nats' else '1'})",
        "spearman": "Pearson correlation of average ranks (scipy tie handling) over the vocab; "
                    + ("every position" if cfg.spearman_positions is None else
                       f"on a uniform random sample of {cfg.spearman_positions} positions of the "
                       "run (without replacement, seed = seed + 7); a segment's value is the "
                       "mean over its sampled positions, segments without one are left out, so "
                       "the segment bootstrap resamples the sampled positions with their "
                       "segments and the CI includes the position sampling"),
        "top1": "argmax score == argmax p",
        "top10": "|top10(score) & top10(p)| / 10",
        "aggregation": "per-segment mean over positions, then mean over segments; 95% "
                       f"percentile bootstrap over segments ({cfg.n_bootstrap} resamples)",
        "controls": "first control_positions positions; permutation = rows of the target "
                    f"shuffled ({cfg.n_permutations} permutations, the same for every position), "
                    "p = (1 + #null at least as good)/(1 + n), for the rank metrics (NDCG@k, "
                    "top-1, top-10 exact; NDCG@full from a wider bracket: p's top-K tokens placed "
                    "in their exact score bucket, the rest of the gain only between ranks K+1 "
                    "and V; a permutation counts when its upper bound reaches the observed lower "
                    "bound); JSD and Spearman are not permuted (each would need a pass over the "
                    "vocabulary per permutation); random_matrix = Gaussian rows with the "
                    "target's row norms (every metric but Spearman)",
        **calibration_definitions(cfg),
        "max_tokens": cfg.max_tokens,
        "overflow": cfg.overflow,
    }


def summarize(
    result: Any,
    cfg: AnalyzeConfig | None = None,
    *,
    model_info: dict | None = None,
    n_layers: int | None = None,
) -> dict[str, Any]:
    """summary.json content: per (hidden, target, score) mean + CI overall and per domain,
    controls, model info, definitions and counts, of an `AnalysisResult`.

    ``cfg``, ``model_info`` and ``n_layers`` default to what the result holds (the result's
    own ``summary`` also adds the layer-lens block)."""
    cfg = cfg if cfg is not None else result.cfg
    model_info = model_info if model_info is not None else getattr(result, "model_info", None)
    n_layers = n_layers if n_layers is not None else getattr(result, "n_layers", None)
    metrics = result.metrics
    seg = result.per_segment
    results = []
    for key, frame in seg.groupby(KEYS, observed=True, sort=False):
        entry: dict[str, Any] = dict(zip(KEYS, key))
        entry["n_segments"] = int(len(frame))
        entry["overall"] = _ci_block(frame, metrics, cfg)
        entry["per_domain"] = {
            str(dom): _ci_block(f, metrics, cfg)
            for dom, f in frame.groupby("domain", observed=True, sort=True)
        }
        entry["controls"] = _controls_block(result.controls, key, metrics)
        add_calibration(entry, result.calibration, cfg)
        results.append(entry)
    if result.calibration is not None:
        results.append(uniform_record(result.calibration, cfg))
    return {
        "model": model_info or {"name": cfg.model},
        "tied_embeddings": (model_info or {}).get("tied_embeddings"),
        "info": result.info,
        "metrics": metrics,
        "definitions": definitions(cfg, result, n_layers),
        "results": results,
    }


def table_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per (hidden, target, score): 'mean [lo, hi]' strings for every metric ("–"
    where a record has none, e.g. the uniform reference), the calibrated JSD and τ after jsd."""
    rows = []
    calibrated = any("jsd_calibrated" in r["overall"] for r in summary["results"])
    for r in summary["results"]:
        row = {"model": summary["model"].get("name"),
               **{k: "–" if r[k] is None else r[k] for k in KEYS}}
        for m in summary["metrics"]:
            row[m] = _cell(r["overall"].get(m))
            if m == "jsd" and calibrated:
                row["jsd_calibrated"] = _cell(r["overall"].get("jsd_calibrated"))
                tau = r.get("temperature")
                row["temperature"] = "–" if tau is None else f"{tau:.3g}"
        perm = r.get("controls", {}).get("permutation", {})
        if "ndcg@full" in perm:
            row["perm p (ndcg@full)"] = f"{perm['ndcg@full']['p_value']:.3g}"
            row["null ndcg@full"] = f"{perm['ndcg@full']['null_mean']:.3f}"
        rand = r.get("controls", {}).get("random_matrix", {})
        if "ndcg@full" in rand:
            row["random-matrix ndcg@full"] = f"{rand['ndcg@full']['random']:.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(v: dict | None) -> str:
    return "–" if v is None else f"{v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"


def table_markdown(summary: dict[str, Any]) -> str:
    """The Table 6.1 Markdown table (means with 95% bootstrap CIs)."""
    frame = table_frame(summary)
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
    bound = summary["definitions"]["ndcg_full_error_bound"]["max"]
    lines.append("")
    lines.append(f"NDCG@full: max abs error bound {bound:.2e} (top-K exact, bracketed tail).")
    if "jsd_calibrated" in frame.columns:
        counts = next((r["calibration"] for r in summary["results"] if "calibration" in r), {})
        lines.append(f"jsd_calibrated: JSD(p || softmax(s/temperature)), temperature fitted on "
                     f"{counts.get('n_fit_positions')} positions of {counts.get('n_fit_segments')} "
                     f"segments, evaluated on {counts.get('n_eval_positions')} positions of "
                     f"{counts.get('n_eval_segments')} other segments; uniform = JSD(p || uniform).")
    return "\n".join(lines) + "\n"
