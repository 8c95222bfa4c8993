"""Figures of the distance-vs-probability analysis: bar plots of per-segment means and the
NDCG of each lens by layer (saved with `geomlens.figures.save_figure`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from geomlens.errors import InputError
from geomlens.figures import save_figure


def plot_metric_bars(per_segment: pd.DataFrame, metrics: list[str], out_dir: str | Path) -> list[Path]:
    """Write `metric_bar_figures` to ``out_dir/<name>.png`` (110 dpi); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in metric_bar_figures(per_segment, metrics).items():
        paths.append(out / f"{name}.png")
        fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    return paths


def metric_bar_figures(per_segment: pd.DataFrame, metrics: list[str]) -> dict[str, plt.Figure]:
    """``metrics_by_score``: every metric by score (hue = hidden/target, 95% CI bars over
    segments) and ``metrics_by_domain``: every metric by domain and score for the first
    (hidden, target) pair."""
    df = per_segment.copy()
    for c in ("hidden", "target", "score", "domain"):
        df[c] = df[c].astype(str)
    df["h/target"] = df["hidden"] + " / " + df["target"]
    long = df.melt(id_vars=["domain", "score", "h/target"], value_vars=metrics,
                   var_name="metric", value_name="value")
    grid = sns.catplot(data=long, x="score", y="value", hue="h/target", col="metric",
                       col_wrap=4, kind="bar", errorbar=("ci", 95), n_boot=200, seed=0, sharey=False,
                       height=3, aspect=1.3)
    _rotate(grid)
    figs = {"metrics_by_score": grid.figure}
    first = df["h/target"].iloc[0]
    sub = long[long["h/target"] == first]
    grid = sns.catplot(data=sub, x="domain", y="value", hue="score", col="metric", col_wrap=4,
                       kind="bar", errorbar=("ci", 95), n_boot=200, seed=0, sharey=False, height=3, aspect=1.3)
    _rotate(grid)
    grid.figure.suptitle(first, y=1.02)
    figs["metrics_by_domain"] = grid.figure
    return figs


def _rotate(grid) -> None:
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", labelbottom=True, labelrotation=45)
    grid.figure.subplots_adjust(hspace=0.7, bottom=0.2)


def plot_layer_ndcg(
    table: pd.DataFrame, out_path: str | Path, *, title: str,
    metrics: tuple[str, ...] = ("ndcg@10", "ndcg@full"),
) -> Path:
    """Write `layer_ndcg_figure` to ``out_path``; returns the path."""
    return save_figure(layer_ndcg_figure(table, title=title, metrics=metrics), Path(out_path))


def layer_ndcg_figure(
    table: pd.DataFrame, *, title: str, metrics: tuple[str, ...] = ("ndcg@10", "ndcg@full"),
) -> plt.Figure:
    """NDCG of each lens by layer from a `geomlens.analysis.layers.summarize_layer_lens` table:
    one panel per metric, x = layer (-1 = embedding), one line per lens with its 95% CI band
    (bootstrap over segments), ``title`` = the model name."""
    for col in ("layer", "lens", "metric", "mean", "ci_low", "ci_high"):
        if col not in table.columns:
            raise InputError(f"plot_layer_ndcg: the table lacks the column {col!r}")
    lenses = list(dict.fromkeys(table["lens"]))
    colors = dict(zip(lenses, sns.color_palette("colorblind", len(lenses))))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), sharex=True,
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = table[table["metric"] == metric].sort_values("layer")
        sns.lineplot(sub, x="layer", y="mean", hue="lens", hue_order=lenses, palette=colors,
                     marker="o", errorbar=None, ax=ax)
        for lens, f in sub.groupby("lens", sort=False):
            ax.fill_between(f["layer"], f["ci_low"], f["ci_high"], color=colors[lens], alpha=0.2)
        ax.set(xlabel="layer (-1 = embedding)", ylabel=metric.replace("ndcg", "NDCG"),
               title=metric.replace("ndcg", "NDCG"), ylim=(0, 1.02))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    return fig
