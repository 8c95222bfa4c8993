"""`AblationResult`: an ablation sweep as a notebook object and as run files.

    result = geomlens.ablate(model, ["The capital of France is Paris.", "..."], sweep=True)
    result                        # HTML headline: clean loss / NDCG@k, the conditions that hurt most
    result.table                  # one row per condition (columns: `geomlens.ablation.sweep`)
    result.summary                # summary.json content
    result.plot("delta_loss")     # a Figure (layer x component heatmap), shown inline
    result.save("runs/mine")      # the files ``geomlens ablate`` writes, from the same code

Definitions (`geomlens.ablation.evaluate`): loss = mean next-token cross-entropy in nats over
the valid positions; metric = NDCG@k (gain 2^p − 1) of the distance ranking −‖h − e_t‖ against
p = softmax(logits), h = ``unembed.hook_in``; top1_agree = share of positions whose nearest
embedding is the arg-max of p. Δ = ablated − clean, on the same batches.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import pandas as pd

from geomlens.ablation.config import AblateConfig
from geomlens.ablation.figures import ablation_heatmap
from geomlens.result import Result, headline_html

#: how many conditions the headline lists (the full table is ``result.table``/ablation.csv)
HEADLINE_ROWS = 5


@dataclass(repr=False)
class AblationResult(Result):
    """The ablation table of `geomlens.ablation.sweep.ablation_table`, with the clean
    reference, the config and the model info it was measured with."""

    table: pd.DataFrame
    """One row per condition: layer, component, method, loss, delta_loss, metric,
    delta_metric, top1_agree, delta_top1_agree, n_tokens."""
    clean: dict[str, int | float]
    """The clean model on the same batches: loss, metric, top1_agree, n_tokens, n_sequences."""
    cfg: AblateConfig
    """The config the ablations ran with (method, k, seed, batch size...)."""
    model_info: dict
    """`geomlens.models.model_info` of the model ablated."""

    FIGURES: ClassVar[dict[str, str]] = {
        "delta_loss": "heatmap_delta_loss.png", "delta_metric": "heatmap_delta_metric.png"}
    """Figure name (the table column it shows) -> its file in the run directory."""

    @property
    def metric(self) -> str:
        """The metric's name, ``ndcg@k``."""
        return f"ndcg@{self.cfg.k}"

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json content: the clean numbers and the condition with the largest Δloss."""
        worst = self.table.loc[self.table["delta_loss"].idxmax()]
        layer = worst["layer"]
        return {
            "model": str(self.model_info.get("name")),
            "model_info": self.model_info,
            "method": self.cfg.method,
            "metric": self.metric,
            "n_sequences": int(self.clean["n_sequences"]),
            "n_tokens": int(self.clean["n_tokens"]),
            "clean_loss": float(self.clean["loss"]),
            "clean_metric": float(self.clean["metric"]),
            "clean_top1_agree": float(self.clean["top1_agree"]),
            "n_conditions": len(self.table),
            "max_delta_loss": {"layer": layer if isinstance(layer, str) else int(layer),
                               "component": str(worst["component"]),
                               "delta_loss": float(worst["delta_loss"])},
            "table": "ablation.csv",
        }

    def headline(self) -> str:
        """The clean numbers and the conditions that raise the loss most, as aligned text."""
        top = self.table.sort_values("delta_loss", ascending=False).head(HEADLINE_ROWS)
        cols = ["layer", "component", "loss", "delta_loss", "metric", "delta_metric", "delta_top1_agree"]
        shown = top[cols].rename(columns={"metric": self.metric, "delta_metric": f"Δ{self.metric}",
                                          "delta_loss": "Δloss", "delta_top1_agree": "Δtop1_agree"})
        c = self.clean
        formats = {c: (lambda x: f"{x:+.4f}") if c.startswith("Δ") else (lambda x: f"{x:.4f}")
                   for c in shown.columns if c not in ("layer", "component")}
        return (f"clean: loss {c['loss']:.4f} nats, {self.metric} {c['metric']:.4f}, top1_agree "
                f"{c['top1_agree']:.4f}\nlargest Δloss ({min(HEADLINE_ROWS, len(self.table))} of "
                f"{len(self.table)} conditions):\n" + shown.to_string(index=False, formatters=formats))

    def _repr_html_(self) -> str:
        name = html.escape(str(self.model_info.get("name")))
        title = (f"<b>ablate</b> {name}: {len(self.table)} condition(s), method "
                 f"<code>{html.escape(self.cfg.method)}</code>, {int(self.clean['n_sequences'])} "
                 f"sequence(s), {int(self.clean['n_tokens'])} positions")
        return headline_html(title, self.headline(), tables=["result.table", "result.summary"],
                             figures=self.figure_names())

    def __repr__(self) -> str:
        return f"AblationResult({len(self.table)} conditions)\n{self.headline()}"

    def _figures(self, names: list[str]) -> dict[str, plt.Figure]:
        return {name: ablation_heatmap(self.table, value=name) for name in names}

    def save(self, run_dir: str | Path) -> dict[str, Any]:
        """Write what ``geomlens ablate`` writes into ``run_dir`` (ablation.csv and the two
        heatmaps) and return the summary (with its ``figures`` list) it writes as summary.json."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(run_dir / "ablation.csv", index=False)
        return {**self.summary, "figures": self.save_figures(run_dir)}
