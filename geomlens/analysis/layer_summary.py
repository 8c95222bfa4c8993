"""The layer lens's CI table, its summary.json block and definition, from the per-position
table of `geomlens.analysis.layers.layer_ndcg`: per-position values -> per-segment means ->
mean and percentile bootstrap CI over segments (`geomlens.metrics.stats.bootstrap_ci`) per
(layer, lens, metric)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from geomlens.analysis.layers import LAYER_LENS_KEYS, LENSES
from geomlens.analysis.sampling import SEED_OFFSETS
from geomlens.metrics.stats import bootstrap_ci


def metric_columns(per_position: pd.DataFrame) -> list[str]:
    """The metric columns of a `layer_ndcg` table (every column but the ids and the bound)."""
    return [c for c in per_position.columns if c not in LAYER_LENS_KEYS and c != "ndcg_full_err"]


def summarize_layer_lens(
    per_position: pd.DataFrame, *, n_bootstrap: int = 1000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """The CI table: per (layer, lens, metric) the mean over segments of the per-segment means
    and its percentile bootstrap CI over segments (`geomlens.metrics.stats.bootstrap_ci`).

    Columns: ``layer, hook, lens, metric, mean, ci_low, ci_high, n_segments, n_positions,
    error_bound_max`` (the largest per-position NDCG@full error bound; 0 for exact metrics).
    """
    metrics = metric_columns(per_position)
    keys = ["layer", "hook", "lens"]
    seg = per_position.groupby(["segment", *keys], sort=False)[metrics].mean().reset_index()
    n_pos = per_position.groupby(keys, sort=False).size()
    err = per_position.groupby(keys, sort=False)["ndcg_full_err"].max()
    rows = []
    for key, frame in seg.groupby(keys, sort=False):
        mean, low, high = bootstrap_ci(frame[metrics].to_numpy(dtype=np.float64),
                                       n_bootstrap=n_bootstrap, level=level, seed=seed)
        for i, m in enumerate(metrics):
            rows.append({**dict(zip(keys, key)), "metric": m, "mean": float(mean[i]),
                         "ci_low": float(low[i]), "ci_high": float(high[i]),
                         "n_segments": len(frame), "n_positions": int(n_pos[key]),
                         "error_bound_max": float(err[key]) if m == "ndcg@full" else 0.0})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {name: i for i, name in enumerate(LENSES.names())}
    return table.sort_values(["layer", "lens", "metric"], key=lambda c: c.map(order)
                             if c.name == "lens" else c, kind="stable").reset_index(drop=True)


def layers_block(table: pd.DataFrame) -> dict:
    """summary.json's ``layers`` block: per lens and metric, mean / ci_low / ci_high by layer."""
    if table.empty:
        return {"layers": [], "lenses": {}}
    layers = sorted(table["layer"].unique().tolist())
    lenses: dict[str, dict] = {}
    for (lens, metric), f in table.groupby(["lens", "metric"], sort=False):
        f = f.set_index("layer").loc[layers]
        lenses.setdefault(lens, {})[metric] = {c: [float(v) for v in f[c]]
                                               for c in ("mean", "ci_low", "ci_high")}
    return {
        "layers": [int(x) for x in layers],
        "hooks": {str(int(k)): v for k, v in table.groupby("layer")["hook"].first().items()},
        "n_positions": int(table["n_positions"].max()),
        "n_segments": int(table["n_segments"].max()),
        "ndcg_full_error_bound_max": float(table["error_bound_max"].max()),
        "lenses": lenses,
    }


def definition(*, positions: int | None, seed: int, topk: int, gain: str) -> str:
    """The exact definition written to summary.json (``definitions.layers``)."""
    lenses = "; ".join(f"{n} = {LENSES.describe(n)}" for n in LENSES.names())
    sample = ("every position" if positions is None else f"{positions} positions drawn uniformly "
              f"without replacement from all positions of the run (seed = seed + {SEED_OFFSETS['layer_lens']})")
    return (f"per layer (-1 = blocks.0.hook_resid_pre, l = blocks.l.hook_resid_post) and lens "
            f"({lenses}), NDCG of the lens's ranking of the vocabulary against p = softmax of the "
            f"model's final logits (gain {gain}; top-{topk} exact, NDCG@full bracketed, midpoint "
            f"reported, max half-width = ndcg_full_error_bound_max), top1/top10 as in the main "
            f"table; on {sample}, captured in the analysis's own forward pass; per-segment mean "
            "over its sampled positions, then mean and 95% percentile bootstrap CI over segments")
