"""Figures of the distance-vs-probability analysis (seaborn bar plots of per-segment means)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_metric_bars(per_segment: pd.DataFrame, metrics: list[str], out_dir: str | Path) -> list[Path]:
    """``metrics_by_score.png``: every metric by score (hue = hidden/target, 95% CI bars over
    segments) and ``metrics_by_domain.png``: every metric by domain and score for the first
    (hidden, target) pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = per_segment.copy()
    for c in ("hidden", "target", "score", "domain"):
        df[c] = df[c].astype(str)
    df["h/target"] = df["hidden"] + " / " + df["target"]
    long = df.melt(id_vars=["domain", "score", "h/target"], value_vars=metrics,
                   var_name="metric", value_name="value")
    paths = []
    grid = sns.catplot(data=long, x="score", y="value", hue="h/target", col="metric",
                       col_wrap=4, kind="bar", errorbar=("ci", 95), n_boot=200, seed=0, sharey=False,
                       height=3, aspect=1.3)
    _rotate(grid)
    paths.append(out / "metrics_by_score.png")
    grid.savefig(paths[-1], dpi=110)
    plt.close(grid.figure)
    first = df["h/target"].iloc[0]
    sub = long[long["h/target"] == first]
    grid = sns.catplot(data=sub, x="domain", y="value", hue="score", col="metric", col_wrap=4,
                       kind="bar", errorbar=("ci", 95), n_boot=200, seed=0, sharey=False, height=3, aspect=1.3)
    _rotate(grid)
    grid.figure.suptitle(first, y=1.02)
    paths.append(out / "metrics_by_domain.png")
    grid.savefig(paths[-1], dpi=110)
    plt.close(grid.figure)
    return paths


def _rotate(grid) -> None:
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", labelbottom=True, labelrotation=45)
    grid.figure.subplots_adjust(hspace=0.7, bottom=0.2)
