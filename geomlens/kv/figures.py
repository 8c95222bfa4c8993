"""Seaborn figures of the K/V losses: losses by domain, per-layer sensitivity, the ≥m curve.

Each function returns a matplotlib Figure (shown inline in a notebook); `geomlens.kv.result.
KVResult.save` writes them as PNGs through `geomlens.figures.save_figure`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def _bar_errors(ax, frame: pd.DataFrame, value: str) -> None:
    """Draw ``value_low``..``value_high`` error bars on the bars of a seaborn barplot, in order."""
    bars = [b for container in ax.containers for b in container]
    for bar, (_, row) in zip(bars, frame.iterrows()):
        x, y = bar.get_x() + bar.get_width() / 2, row[value]
        ax.errorbar(x, y, yerr=[[y - row[f"{value}_low"]], [row[f"{value}_high"] - y]],
                    color="black", capsize=3, lw=1)


def domain_losses_figure(losses: pd.DataFrame, *, title: str = "") -> plt.Figure:
    """Clean vs patched loss per domain (and ``all``) with 95% bootstrap CIs."""
    long = pd.concat([
        losses.assign(condition=c, loss=losses[f"{c}_loss"], loss_low=losses[f"{c}_loss_low"],
                      loss_high=losses[f"{c}_loss_high"])
        for c in ("clean", "patched")
    ])[["domain", "condition", "loss", "loss_low", "loss_high"]]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    sns.barplot(long, x="domain", y="loss", hue="condition", errorbar=None, ax=ax)
    order = pd.concat([long[long.condition == c] for c in ("clean", "patched")])
    _bar_errors(ax, order.reset_index(drop=True), "loss")
    ax.set(ylabel="loss (nats / token)", title=title or "Clean vs first-layer K/V")
    fig.tight_layout()
    return fig


def layer_sensitivity_figure(sweep: pd.DataFrame, *, title: str = "") -> plt.Figure:
    """Δloss when only layer l takes layer 0's K/V, per layer, with 95% CIs."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(sweep) + 2), 4))
    sns.barplot(sweep, x="layer", y="delta_loss", color="tab:red", errorbar=None, ax=ax)
    _bar_errors(ax, sweep.reset_index(drop=True), "delta_loss")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set(xlabel="layer l (only l takes layer 0's K/V)", ylabel="Δ loss (nats / token)",
           title=title or "Per-layer sensitivity")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig


def ge_m_figure(curve: pd.DataFrame, clean_loss: float, *, title: str = "") -> plt.Figure:
    """Loss when every layer ≥ m takes layer 0's K/V, against m, with the clean loss."""
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(curve, x="m", y="patched_loss", marker="o", ax=ax, label="layers ≥ m share")
    ax.fill_between(curve["m"], curve["patched_loss_low"], curve["patched_loss_high"], alpha=0.25)
    ax.axhline(clean_loss, color="grey", ls="--", lw=1, label="clean")
    ax.set(xlabel="m", ylabel="loss (nats / token)", title=title or "Layers ≥ m use layer 0's K/V")
    ax.legend()
    fig.tight_layout()
    return fig
