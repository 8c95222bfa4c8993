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
