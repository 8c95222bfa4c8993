"""`TrainingResult`: a trained run as a notebook object and as run files.

    trainer = geomlens.Trainer(cfg, "runs/x")
    trainer.train()
    result = trainer.result()              # or geomlens.training_result("runs/x") for a CLI run
    result                                 # HTML headline: val loss, perplexity, accuracy, params
    result.metrics                         # the rows of metrics.csv, as a DataFrame
    result.plot("loss")                    # a Figure, shown inline; nothing is written
    result.plot("sigma_vs_frequency")      # heads with per-token scales σ_v (hybrid, gaussian...)
    result.nearest_vs_probable("text")     # nearest embeddings beside the most probable tokens
    result.save("runs/x")                  # the figures ``geomlens train`` writes, from this code

Definitions: val loss = mean next-token cross-entropy in nats per token over the run's fixed
validation windows, perplexity = exp(val loss), accuracy = share of those tokens whose arg-max
logit is the target (`geomlens.training.loop.Trainer.estimate_loss`), all at the last step.
``sigma_count_spearman`` = Spearman's ρ (average ranks for ties, as ``scipy.stats.spearmanr``)
between σ_v and the number of times token v occurs in the training split, over every model id
(unseen tokens and a reduced vocabulary's OOV id included), as ``make_table62.py`` reports it.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.errors import InputError
from geomlens.geometry.nearest import nearest_vs_probable
from geomlens.metrics.correlation import spearman
from geomlens.models.trained import load_trained, read_trained_config
from geomlens.result import Result, headline_html
from geomlens.training.config import TrainConfig
from geomlens.training.figures import loss_figure, sigma_vs_frequency_figure

#: the file, in a run directory, holding σ_v and the training counts (`Trainer`)
KERNEL_FILE = "kernel.pt"


def sigma_count_spearman(sigma: Float[Tensor, "d_vocab"], counts: Int[Tensor, "d_vocab"]) -> float:
    """Spearman's ρ between σ_v and the training count of each token (ties: average ranks)."""
    return float(spearman(sigma.detach().double().cpu()[None], counts.double().cpu()[None])[0])


@dataclass(repr=False)
class TrainingResult(Result):
    """The summary, metrics rows and learned per-token scales of one training run."""

    summary: dict[str, Any]
    """What `Trainer.train` returns (summary.json): val_loss, val_perplexity, val_accuracy,
    head, model, head_params, total_params, steps, tokens, tokens_per_s, ..."""
    metrics: pd.DataFrame
    """One row per logged step (metrics.csv): step, tokens, train_loss (mean over the steps
    since the previous row), val_loss and val_accuracy (at evaluation steps, else NaN), lr,
    tokens_per_s."""
    cfg: TrainConfig
    """The run's config."""
    sigma: Float[Tensor, "d_vocab"] | None = None
    """Learned σ_v of a head with per-token scales (None for other heads)."""
    counts: Int[Tensor, "d_vocab"] | None = None
    """Occurrences of each model id in the training split (with ``sigma``)."""
    run_dir: Path | None = None
    """The run directory (its model.safetensors + model.json feed `nearest_vs_probable`)."""
    model: Any = None
    """The trained model; None = loaded from ``run_dir`` the first time it is needed."""

    FIGURES: ClassVar[dict[str, str]] = {
        "loss": "figures/loss.png", "sigma_vs_frequency": "figures/sigma_vs_frequency.png"}
    """Figure name -> its file in the run directory."""

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainingResult:
        """The result of a finished ``geomlens train`` run directory (summary.json, metrics.csv,
        model.json, and kernel.pt where the head has per-token scales)."""
        run_dir = Path(run_dir)
        if not (run_dir / "summary.json").is_file():
            raise InputError(f"{run_dir} holds no summary.json (not a finished `geomlens train` "
                             "run); for a Trainer in this session use trainer.result().")
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        cfg = TrainConfig.from_dict(read_trained_config(run_dir)["train_config"])
        kernel = (torch.load(run_dir / KERNEL_FILE, weights_only=True)
                  if (run_dir / KERNEL_FILE).is_file() else {})
        return cls(summary=summary, metrics=pd.read_csv(run_dir / "metrics.csv"), cfg=cfg,
                   sigma=kernel.get("sigma"), counts=kernel.get("counts"), run_dir=run_dir)

    @property
    def sigma_spearman(self) -> float | None:
        """`sigma_count_spearman` of the run (None for a head without per-token scales)."""
        if self.sigma is None or self.counts is None:
            return None
        return sigma_count_spearman(self.sigma, self.counts)

    def headline(self) -> str:
        """Validation loss, perplexity and accuracy; parameters; σ_v vs frequency."""
        s = self.summary
        lines = [f"val loss {s['val_loss']:.4f} nats, perplexity {s['val_perplexity']:.2f}, "
                 f"top-1 accuracy {s['val_accuracy']:.4f}",
                 f"head {s['head']}: {s['head_params']:,} head params, {s['total_params']:,} in all",
                 f"{s['steps']:,} steps, {s['tokens']:,} training tokens, "
                 f"{s['tokens_per_s']:,.0f} tokens/s"]
        rho = self.sigma_spearman
        if rho is not None:
            lines.append(f"Spearman(σ_v, training count) = {rho:+.3f} over {len(self.sigma):,} tokens")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        title = (f"<b>train</b> {html.escape(str(self.summary.get('model')))}, head "
                 f"<code>{html.escape(str(self.summary['head']))}</code>, seed {self.cfg.seed}; "
                 "validation at the last step")
        return headline_html(title, self.headline(), tables=["result.metrics", "result.summary",
                             "result.nearest_vs_probable(text)"], figures=self.figure_names())

    def __repr__(self) -> str:
        return f"TrainingResult({self.summary['head']}, {self.summary['steps']} steps)\n{self.headline()}"

    def figure_names(self) -> list[str]:
        """loss, and sigma_vs_frequency for a head with per-token scales."""
        return list(self.FIGURES) if self.sigma is not None else ["loss"]

    def _figures(self, names: list[str]) -> dict[str, plt.Figure]:
        tag = f"{self.summary.get('model')}, head {self.summary['head']}"
        draw = {
            "loss": lambda: loss_figure(self.metrics, title=f"Loss ({tag})"),
            "sigma_vs_frequency": lambda: sigma_vs_frequency_figure(
                self.sigma, self.counts, title=f"{tag} (Spearman ρ = {self.sigma_spearman:+.3f})"),
        }
        return {name: draw[name]() for name in names}

    def trained_model(self) -> Any:
        """The trained model (loaded once from ``run_dir``, on the CPU, with its token map)."""
        if self.model is None:
            if self.run_dir is None:
                raise InputError("this result has neither a model nor a run directory to load one from.")
            self.model = load_trained(self.run_dir, device="cpu")
        return self.model

    def nearest_vs_probable(self, context: Any, *, pos: int = -1, n: int = 8) -> pd.DataFrame:
        """The ``n`` nearest embedding rows of the head's input h = ``unembed.hook_in`` beside the
        ``n`` most probable next tokens, at position ``pos`` of ``context`` (a text or token
        ids): `geomlens.geometry.nearest.nearest_vs_probable` on the trained model."""
        return nearest_vs_probable(self.trained_model(), context, pos=pos, n=n)

    def save(self, run_dir: str | Path) -> dict[str, Any]:
        """Write what ``geomlens train`` writes beyond the model (metrics.csv, kernel.pt, figures)
        into ``run_dir``, and return the summary with ``sigma_count_spearman`` and ``figures``.
        Files of the run's own directory are not rewritten."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        same = self.run_dir is not None and run_dir.resolve() == Path(self.run_dir).resolve()
        if not same:
            self.metrics.to_csv(run_dir / "metrics.csv", index=False, na_rep="nan")
            if self.sigma is not None:
                torch.save({"sigma": self.sigma, "counts": self.counts}, run_dir / KERNEL_FILE)
        rho = self.sigma_spearman
        extra = {"sigma_count_spearman": rho} if rho is not None and not math.isnan(rho) else {}
        return {**self.summary, **extra, "figures": self.save_figures(run_dir)}
