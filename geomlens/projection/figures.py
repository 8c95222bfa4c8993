"""Figures of the projection thread, each built as a matplotlib Figure (shown inline by the result
objects of `geomlens.projection.result`) and written by `geomlens.figures.save_figure`:

    alignment_heatmap_figure   layer x layer scores per kind, Hungarian matches outlined
    evidence_figure            per layer, observed pairing vs shuffled baseline (Dar et al. Figs 3-4)
    stitch_figure              accuracy of the translated classifier vs chance, null, ceiling, A
    top_tokens_figure          the top tokens of a few projected parameters, as bars
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Rectangle

from geomlens.figures import save_figure
from geomlens.projection.alignment import match_layers


def alignment_heatmap_figure(
    scores: dict[str, np.ndarray], *, title: str = "", label_a: str = "model a",
    label_b: str = "model b",
) -> plt.Figure:
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
    fig.tight_layout()
    return fig


def plot_alignment_heatmap(scores: dict[str, np.ndarray], out_path: str | Path, **kw) -> Path:
    """`alignment_heatmap_figure` written to ``out_path``."""
    return save_figure(alignment_heatmap_figure(scores, **kw), Path(out_path))


def evidence_figure(table: pd.DataFrame, *, title: str = "", p_level: float = 0.001) -> plt.Figure:
    """One panel per (kind, metric) of an evidence table (`geomlens.projection.evidence`): per
    layer, the observed pairing (bar, 95% bootstrap CI) beside the shuffled baseline (bar,
    ± 1 sd of the permutation null), as in Dar et al.'s Figures 3-4; a dot marks the layers
    with p < ``p_level``."""
    groups = list(table.groupby(["kind", "metric"], sort=False))
    ncol = min(3, len(groups))
    nrow = -(-len(groups) // ncol)
    width = max(4.6, 0.16 * table["layer"].nunique() + 1.8)
    fig, axes = plt.subplots(nrow, ncol, figsize=(width * ncol, 2.8 * nrow), squeeze=False)
    for ax, ((kind, metric), df) in zip(axes.flat, groups):
        x = np.arange(len(df))
        ax.bar(x - 0.2, df["value"], 0.4, label="aligned",
               yerr=[df["value"] - df["ci_low"], df["ci_high"] - df["value"]], capsize=1.5)
        ax.bar(x + 0.2, df["baseline"], 0.4, label="shuffled", yerr=df["baseline_sd"], capsize=1.5)
        sig = (df["p"] < p_level).to_numpy()
        ax.plot(x[sig], df["ci_high"].to_numpy()[sig] * 1.05 + 1e-3, "k.", ms=3,
                label=f"p < {p_level:g}")
        ax.set_xticks(x, [str(v) for v in df["layer"]], fontsize=6)
        ax.set(title=f"{kind}: {metric}", xlabel="layer")
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_evidence(table: pd.DataFrame, out_path: str | Path, *, title: str = "") -> Path:
    """`evidence_figure` written to ``out_path``."""
    return save_figure(evidence_figure(table, title=title), Path(out_path))


#: stitching accuracies in the order `stitch_figure` draws them
STITCH_BARS = (("acc_a", "A's own"), ("acc_translated", "translated into B"),
               ("acc_perm_mean", "B's rows permuted"), ("acc_ceiling", "trained on B"))


def stitch_figure(table: pd.DataFrame, *, title: str = "") -> plt.Figure:
    """Per direction, the test accuracy of A's classifier on A, translated into B, the permuted
    null and the classifier trained on B (ceiling): mean over split seeds (bar) and each
    split (dots); the dashed line is chance."""
    dirs = list(dict.fromkeys(table["direction"]))
    fig, ax = plt.subplots(figsize=(2.4 + 2.2 * len(dirs), 3.4))
    width = 0.8 / len(STITCH_BARS)
    for j, (col, label) in enumerate(STITCH_BARS):
        x = np.arange(len(dirs)) + (j - (len(STITCH_BARS) - 1) / 2) * width
        means = [table.loc[table["direction"] == d, col].mean() for d in dirs]
        ax.bar(x, means, width, label=label)
        for xi, d in zip(x, dirs):
            vals = table.loc[table["direction"] == d, col].to_numpy()
            ax.plot(np.full(len(vals), xi), vals, "k.", ms=3)
    ax.axhline(float(table["chance"].iloc[0]), color="grey", ls="--", lw=1, label="chance")
    ax.set_xticks(np.arange(len(dirs)), dirs)
    ax.set(ylabel="test accuracy", ylim=(0, 1))
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


@functools.cache
def _font_codepoints() -> frozenset[int]:
    """Code points the default matplotlib font can draw."""
    from matplotlib.font_manager import FontProperties, findfont
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(findfont(FontProperties())).get_charmap())


def token_label(token: str) -> str:
    """``repr(token)`` with every character the default font cannot draw written as an escape
    (``\\uXXXX``), so a label never loses a character silently."""
    have = _font_codepoints()
    return "".join(c if ord(c) in have or ord(c) < 128 else c.encode("unicode_escape").decode()
                   for c in repr(token))


def top_tokens_figure(table: pd.DataFrame, *, n: int = 8, max_panels: int = 6) -> plt.Figure:
    """Bars of the top-``n`` scores (direction ``top``) of the first ``max_panels`` parameters of
    a projection table (`geomlens.projection.project.COLUMNS`), labelled by token text."""
    top = table[table["direction"] == "top"]
    keys = ["kind", "layer", "head", "neuron", "through"]
    groups = list(top.groupby(keys, dropna=False, sort=False))[:max_panels]
    ncol = min(3, max(len(groups), 1))
    nrow = max(1, -(-len(groups) // ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 0.28 * n * nrow + 1.0 * nrow), squeeze=False)
    for ax, (key, df) in zip(axes.flat, groups):
        df = df.sort_values("rank").head(n)
        if df["src_token"].notna().any():
            labels = [f"{token_label(s)}→{token_label(t)}" for s, t in zip(df["src_token"], df["token"])]
        else:
            labels = [token_label(t) for t in df["token"]]
        ax.barh(np.arange(len(df))[::-1], df["score"], color="C0")
        ax.set_yticks(np.arange(len(df))[::-1], labels, fontsize=7)
        kind, layer, head, neuron, through = key
        what = f"head {head}" if pd.notna(head) else ""
        what += f" neuron {neuron}" if pd.notna(neuron) else ""
        ax.set_title(f"{kind} L{layer} {what} ({through})", fontsize=8)
        ax.tick_params(axis="x", labelsize=6)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
