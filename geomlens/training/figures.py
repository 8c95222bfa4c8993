"""Figures of a training run: the loss curve, and learned σ_v against training-token count.

Each function returns a matplotlib Figure (or draws into an Axes) and writes nothing;
`geomlens.training.result.TrainingResult.save` writes them through `geomlens.figures.save_figure`,
and ``experiments/results/make_table62.py`` draws its σ_v panels with `draw_sigma_vs_frequency`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from jaxtyping import Float, Int
from torch import Tensor


def loss_figure(metrics: pd.DataFrame, *, title: str = "") -> plt.Figure:
    """Training loss (mean over each logged window of steps) as a line, validation loss as
    points, against the step (``metrics``: the rows of metrics.csv)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    train = metrics[metrics["train_loss"].notna()]
    val = metrics[metrics["val_loss"].notna()]
    ax.plot(train["step"], train["train_loss"], color="C0", label="train")
    ax.scatter(val["step"], val["val_loss"], color="C1", label="validation", zorder=3)
    ax.legend()
    ax.set(xlabel="step", ylabel="loss (nats / token)", title=title or "Loss")
    fig.tight_layout()
    return fig


def draw_sigma_vs_frequency(
    ax: plt.Axes,
    sigma: Float[Tensor, "d_vocab"],
    counts: Int[Tensor, "d_vocab"],
    *,
    title: str = "",
) -> None:
    """Scatter each token's learned σ_v against its training count + 1 (log x) into ``ax``."""
    sns.scatterplot(x=counts.to(torch.float64).numpy() + 1, y=sigma.detach().float().numpy(),
                    s=6, alpha=0.4, linewidth=0, ax=ax)
    ax.set(xscale="log", xlabel="training count + 1", ylabel="learned σ_v", title=title)


def sigma_vs_frequency_figure(
    sigma: Float[Tensor, "d_vocab"], counts: Int[Tensor, "d_vocab"], *, title: str = ""
) -> plt.Figure:
    """`draw_sigma_vs_frequency` as a Figure of its own."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    draw_sigma_vs_frequency(ax, sigma, counts, title=title)
    fig.tight_layout()
    return fig
