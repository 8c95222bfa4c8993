"""Figures of the ablation sweep: a layer x component heatmap of a table column."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from geomlens.errors import InputError


def ablation_heatmap(df: pd.DataFrame, *, value: str = "delta_loss") -> plt.Figure:
    """Heatmap layer x component of ``value`` (a column of the ablation table, e.g.
    ``delta_loss`` or ``delta_metric``), annotated with the numbers; colours centred on 0."""
    for col in ("layer", "component", value):
        if col not in df.columns:
            raise InputError(f"ablation_heatmap: the table lacks the column {col!r}")
    grid = df.pivot_table(index="layer", columns="component", values=value, aggfunc="mean", sort=False)
    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * grid.shape[1], 1.2 + 0.32 * grid.shape[0]))
    vmax = float(grid.abs().max().max()) or 1.0
    sns.heatmap(grid, annot=True, fmt=".3g", cmap="RdBu_r", vmin=-vmax, vmax=vmax, ax=ax,
                annot_kws={"fontsize": 7})
    ax.set(title=value, xlabel="component", ylabel="layer")
    fig.tight_layout()
    return fig
