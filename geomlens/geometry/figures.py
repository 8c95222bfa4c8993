"""Figures of trajectories: step sizes, inertia and lens ranks by layer, and PCA pictures of
a few token paths among their nearest embedding rows (saved with `geomlens.figures.save_figure`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from jaxtyping import Int
from torch import Tensor

from geomlens.backend import view_of
from geomlens.data.inputs import as_sequences
from geomlens.errors import InputError
from geomlens.figures import save_figure
from geomlens.geometry.distances import sq_distances
from geomlens.geometry.trajectory import trajectory

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


def _long(per_layer: pd.DataFrame, columns: dict[str, str], hue: str | None) -> pd.DataFrame:
    """Melt ``columns`` (name in table -> legend label) into long form for seaborn."""
    missing = [c for c in columns if c not in per_layer.columns]
    if missing:
        raise InputError(f"The per-layer table lacks columns {missing}; pass summarize_layers(df).")
    keep = ["layer"] + ([hue] if hue else [])
    long = per_layer[keep + list(columns)].melt(id_vars=keep, var_name="quantity", value_name="value")
    long["quantity"] = long["quantity"].map(columns)
    return long


def plot_layer_curves(
    per_layer_df: pd.DataFrame, out_dir: str | Path, *, stat: str = "median"
) -> list[Path]:
    """Write `layer_curve_figures` to ``out_dir/<name>.png``; returns the paths."""
    out = Path(out_dir)
    return [save_figure(fig, out / f"{name}.png")
            for name, fig in layer_curve_figures(per_layer_df, stat=stat).items()]


def layer_curve_figures(per_layer_df: pd.DataFrame, *, stat: str = "median") -> dict[str, plt.Figure]:
    """Three figures from a `summarize_layers` table (``stat`` = "median" or "mean"):

    ``step_norms.png``   ||dh||, ||attn_out||, ||mlp_out|| by layer
    ``inertia.png``      cosine between consecutive steps by layer
    ``lens_ranks.png``   distance-lens vs logit-lens rank of the model's top-1 token and of the
                         next token by layer (log-scale y; rank + 1 is plotted so rank 0 shows)

    A ``domain`` column, if present, becomes the line style.
    """
    hue = "domain" if "domain" in per_layer_df.columns else None
    s = f"_{stat}"
    figs: dict[str, plt.Figure] = {}

    long = _long(per_layer_df, {f"step_norm{s}": "total step", f"attn_norm{s}": "attention",
                                f"mlp_norm{s}": "MLP"}, hue)
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(long, x="layer", y="value", hue="quantity", style=hue, marker="o", ax=ax)
    ax.set(ylabel=f"{stat} norm", title="Step size per layer: ||Δh|| and its attention/MLP parts")
    figs["step_norms"] = fig

    long = _long(per_layer_df, {f"inertia_cos{s}": "cos(Δh^l, Δh^(l-1))"}, hue)
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(long.dropna(), x="layer", y="value", hue=hue, marker="o", ax=ax)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set(ylabel=f"{stat} cosine", title="Inertia: cosine between consecutive steps")
    figs["inertia"] = fig

    cols = {f"dlens_rank_top1{s}": "distance lens, top-1", f"dlens_rank_next{s}": "distance lens, next",
            f"logit_rank_top1{s}": "logit lens, top-1", f"logit_rank_next{s}": "logit lens, next"}
    long = _long(per_layer_df, cols, hue)
    long["value"] = long["value"] + 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(long, x="layer", y="value", hue="quantity", style=hue, marker="o", ax=ax)
    ax.set_yscale("log")
    ax.set(ylabel=f"{stat} rank + 1 (log)", title="Distance lens vs logit lens")
    figs["lens_ranks"] = fig
    for fig in figs.values():
        fig.tight_layout()
    return figs


def _labels(model: HookedTransformer, ids: list[int]) -> list[str]:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return [str(i) for i in ids]
    return [repr(tok.decode([i]))[1:-1] for i in ids]


@torch.no_grad()
def plot_pca_trajectories(
    model: HookedTransformer,
    tokens: Int[Tensor, "pos"] | Int[Tensor, "1 pos"],
    out_path: str | Path,
    n_tokens: int = 5,
    n_neighbors: int = 10,
) -> Path:
    """Write `pca_trajectory_figure` to ``out_path``; returns the path."""
    return save_figure(pca_trajectory_figure(model, tokens, n_tokens, n_neighbors), Path(out_path))


@torch.no_grad()
def pca_trajectory_figure(
    model: HookedTransformer, tokens: Any, n_tokens: int = 5, n_neighbors: int = 10
) -> plt.Figure:
    """One 2-D PCA picture of a few token trajectories among their nearest embeddings.

    Takes the last ``n_tokens`` positions of one sequence, their points ``h^0..h^L``
    (`geomlens.geometry.trajectory`, raw residual stream) and, for each, the ``n_neighbors``
    rows of ``W_E`` nearest to its final point ``h^L``. PCA (2 components, centred SVD) is fit
    on all these points together; trajectories are drawn as lines from the embedding (o) to
    the last layer (x), the neighbour embeddings as labelled grey dots.
    """
    seqs = as_sequences(model, tokens, where="pca_trajectory_figure")
    if len(seqs) != 1:
        raise InputError(f"pca_trajectory_figure: give one sequence, not {len(seqs)}")
    tokens = seqs[0]
    traj = trajectory(model, tokens).float()  # [layer pos d_model]
    positions = list(range(max(0, len(tokens) - n_tokens), len(tokens)))
    W_E = view_of(model).W_E
    neighbors: list[int] = []
    for p in positions:  # [1, d_vocab] squared distances, computed in vocabulary chunks
        sq = sq_distances(traj[-1, p][None], W_E, vocab_chunk=8192)[0]
        nearest = sq.topk(min(n_neighbors, len(sq)), largest=False).indices.tolist()
        neighbors.extend(i for i in nearest if i not in neighbors)
    points = torch.cat([traj[:, positions].reshape(-1, traj.shape[-1]), W_E[neighbors].float()])
    mean = points.mean(0, keepdim=True)
    _, _, V = torch.linalg.svd(points - mean, full_matrices=False)
    proj = lambda x: ((x - mean) @ V[:2].T).cpu().numpy()  # noqa: E731

    fig, ax = plt.subplots(figsize=(7, 6))
    nb = proj(W_E[neighbors].float())
    ax.scatter(nb[:, 0], nb[:, 1], c="lightgrey", s=18, zorder=1)
    for (x, y), label in zip(nb, _labels(model, neighbors)):
        ax.annotate(label, (x, y), fontsize=7, color="grey")
    colors = sns.color_palette("husl", len(positions))
    for color, p, label in zip(colors, positions, _labels(model, tokens[positions].tolist())):
        xy = proj(traj[:, p])
        ax.plot(xy[:, 0], xy[:, 1], "-", color=color, lw=1.2, label=f"pos {p}: {label}", zorder=2)
        ax.plot(xy[0, 0], xy[0, 1], "o", color=color, zorder=3)
        ax.plot(xy[-1, 0], xy[-1, 1], "x", color=color, ms=8, zorder=3)
    ax.set(xlabel="PC 1", ylabel="PC 2", title="Residual trajectories (o = embedding, x = last layer)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
