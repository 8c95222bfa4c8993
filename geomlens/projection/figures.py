"""The alignment heatmap: layer x layer scores per kind, Hungarian matches outlined."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.patches import Rectangle

from geomlens.figures import save_figure
from geomlens.projection.alignment import match_layers


def plot_alignment_heatmap(
    scores: dict[str, np.ndarray],
    out_path: str | Path,
    *,
    title: str = "",
    label_a: str = "model a",
    label_b: str = "model b",
) -> Path:
    """One panel per key of ``scores`` (rows: layers of a, columns: layers of b); the cells of
    the Hungarian matching are outlined in black."""
    keys = list(scores)
    n_a, n_b = next(iter(scores.values())).shape
    width = max(2.6, 0.45 * n_b + 1.6)
    height = max(2.6, 0.22 * n_a + 1.4)
    fig, axes = plt.subplots(1, len(keys), figsize=(width * len(keys), height), squeeze=False)
    for ax, key in zip(axes[0], keys):
        S = scores[key]
        sns.heatmap(S, ax=ax, cmap="viridis", annot=S.size <= 64, fmt=".3f",
                    annot_kws={"fontsize": 6}, cbar_kws={"shrink": 0.8})
        pairs, matched = match_layers(S)
        for a, b in pairs:
            ax.add_patch(Rectangle((b, a), 1, 1, fill=False, edgecolor="black", lw=1.5))
        ax.set(title=f"{key} (matched {matched:.3f})", xlabel=f"layer of {label_b}",
               ylabel=f"layer of {label_a}")
        ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, Path(out_path))


def plot_evidence(table, out_path: str | Path, *, title: str = "") -> Path:
    """One panel per (kind, metric) of an evidence table (`geomlens.projection.evidence`): per
    layer, the observed pairing (bar, 95% bootstrap CI) beside the shuffled baseline (bar,
    ± 1 sd of the permutation null), as in Dar et al.'s Figures 3-4."""
    groups = list(table.groupby(["kind", "metric"], sort=False))
    ncol = min(3, len(groups))
    nrow = -(-len(groups) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 2.8 * nrow), squeeze=False)
    for ax, ((kind, metric), df) in zip(axes.flat, groups):
        x = np.arange(len(df))
        ax.bar(x - 0.2, df["value"], 0.4, label="aligned",
               yerr=[df["value"] - df["ci_low"], df["ci_high"] - df["value"]], capsize=1.5)
        ax.bar(x + 0.2, df["baseline"], 0.4, label="shuffled", yerr=df["baseline_sd"], capsize=1.5)
        ax.set_xticks(x, [str(v) for v in df["layer"]], fontsize=6)
        ax.set(title=f"{kind}: {metric}", xlabel="layer")
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, Path(out_path))
