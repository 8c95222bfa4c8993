"""`KVResult`: clean vs first-layer-K/V losses as a notebook object and as run files.

    result = geomlens.kv_losses(model, ["The capital of France is Paris.", "..."], sweep=True)
    result                          # HTML headline: clean / patched / Δ loss with 95% CIs
    result.losses                   # per domain + all (losses.csv)
    result.sweep_layer              # only layer l takes layer 0's K/V, per l (sweep_layer.csv)
    result.plot("layer_sensitivity")  # a Figure, shown inline
    result.save("runs/mine")        # the files ``geomlens kv`` writes, from the same code

Loss = mean next-token cross-entropy in nats per predicted token, token-weighted over segments;
95% CIs are percentile bootstraps over segments, paired for Δ = patched − clean
(`geomlens.kv.evaluate`). The patch is defined in `geomlens.kv.patch`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import pandas as pd

from geomlens.kv.config import KVConfig
from geomlens.kv.figures import domain_losses_figure, ge_m_figure, layer_sensitivity_figure
from geomlens.result import Result, headline_html

#: the conditions a sweep ranks in the summary (largest Δloss first)
TOP_LAYERS = 3


@dataclass(repr=False)
class KVResult(Result):
    """Per-segment losses of the clean and the patched model, the tables built from them, and
    the config, layer map and model they were measured with."""

    per_segment: pd.DataFrame
    """segment_id, domain, n_predicted, clean_ce_sum, patched_ce_sum (nats)."""
    losses: pd.DataFrame
    """One row per domain plus ``all``: clean / patched loss and perplexity, delta_loss, each
    with ``_low``/``_high`` 95% CIs (`geomlens.kv.evaluate.loss_rows`)."""
    cfg: KVConfig
    """The config (mode, layers, n_bootstrap, seed...)."""
    layer_types: str
    """The layer map as LCKV's ``layer_types`` string (source layer of each layer)."""
    key_recipe: str
    """How the keys were taken (`geomlens.kv.patch.key_recipe`)."""
    n_layers: int
    """The model's number of blocks."""
    cache_sizes: dict[str, int | float]
    """Cache bytes per token, standard vs patched (eqs. 5.17–5.18), and their ratio."""
    model_info: dict
    """`geomlens.models.model_info` of the model."""
    wall_time_s: float
    """Seconds the measurement took (forward passes and bootstraps; loading the model is not
    counted)."""
    sweep_layer: pd.DataFrame | None = None
    """With ``cfg.sweep``: only layer l takes layer 0's K/V, one row per l ≥ 1."""
    sweep_ge_m: pd.DataFrame | None = None
    """With ``cfg.sweep``: layers ≥ m take layer 0's K/V, one row per m ≥ 1."""

    FIGURES: ClassVar[dict[str, str]] = {
        "losses_by_domain": "figures/losses_by_domain.png",
        "layer_sensitivity": "figures/layer_sensitivity.png", "ge_m_curve": "figures/ge_m_curve.png"}
    """Figure name -> its file in the run directory."""

    @property
    def name(self) -> str:
        """The model's name."""
        return str(self.model_info.get("name"))

    @property
    def overall(self) -> pd.Series:
        """The ``all`` row of `losses`."""
        return self.losses[self.losses.domain == "all"].iloc[0]

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json content: the ``all`` row's numbers, per-domain losses, cache sizes and,
        with the sweep, the most sensitive layers and the ≥m curve's endpoints."""
        counts = self.per_segment["n_predicted"]
        summary: dict[str, Any] = {
            "model": self.name, "mode": self.cfg.mode, "layers": self.cfg.layers,
            "layer_types": self.layer_types, "key_recipe": self.key_recipe,
            "n_layers": self.n_layers, "n_segments": len(self.per_segment),
            "n_predicted_tokens": int(counts.sum()),
            **{k: float(v) for k, v in self.overall.items() if k not in ("domain", "n_segments", "n_tokens")},
            "per_domain": {r.domain: {"clean_loss": r.clean_loss, "patched_loss": r.patched_loss,
                                      "delta_loss": r.delta_loss} for r in self.losses.itertuples()},
            **self.cache_sizes, "model_info": self.model_info,
        }
        if self.sweep_layer is not None and self.sweep_ge_m is not None:
            summary.update(self._sweep_summary())
        summary["wall_time_s"] = self.wall_time_s
        return summary

    def _sweep_summary(self) -> dict[str, Any]:
        top = self.sweep_layer.sort_values("delta_loss", ascending=False).head(TOP_LAYERS)
        ends = (self.sweep_ge_m.iloc[0], self.sweep_ge_m.iloc[-1])
        return {
            "most_sensitive_layers": [{"layer": int(r.layer), "delta_loss": r.delta_loss,
                                       "ci": [r.delta_loss_low, r.delta_loss_high]} for r in top.itertuples()],
            "ge_m_endpoints": {f"m={int(r.m)}": {"patched_loss": r.patched_loss, "delta_loss": r.delta_loss,
                                                "ci": [r.patched_loss_low, r.patched_loss_high]} for r in ends},
        }

    def headline(self) -> str:
        """Clean, patched and Δ loss of all segments with their 95% CIs (what the CLI prints),
        and with the sweep the layers that mind most."""
        row = self.overall
        lines = [f"{name:<13}{row[key]:.4f} [{row[key + '_low']:.4f}, {row[key + '_high']:.4f}] nats"
                 for name, key in (("clean loss", "clean_loss"), ("patched loss", "patched_loss"),
                                   ("delta", "delta_loss"))]
        lines.append(f"cache per token: {self.cache_sizes['cache_bytes_per_token_standard']:,} B "
                     f"standard vs {self.cache_sizes['cache_bytes_per_token_patched']:,} B "
                     f"({self.cache_sizes['cache_reduction']:g}x smaller)")
        if self.sweep_layer is not None:
            top = self._sweep_summary()["most_sensitive_layers"]
            lines.append("most sensitive layers (only l shares): " + ", ".join(
                f"{d['layer']} ({d['delta_loss']:+.3f})" for d in top))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        title = (f"<b>kv</b> {html.escape(self.name)}: layers <code>{html.escape(self.cfg.layers)}"
                 f"</code> ({html.escape(self.cfg.mode)}), layer_types {html.escape(self.layer_types)}; "
                 f"{len(self.per_segment)} segment(s), {int(self.per_segment['n_predicted'].sum())} "
                 "predicted tokens; mean [95% bootstrap CI over segments]")
        tables = ["result.losses", "result.per_segment"]
        tables += ["result.sweep_layer", "result.sweep_ge_m"] if self.sweep_layer is not None else []
        return headline_html(title, self.headline(), tables=tables, figures=self.figure_names())

    def __repr__(self) -> str:
        return f"KVResult({self.name}, layers {self.cfg.layers}, {self.cfg.mode})\n{self.headline()}"

    def figure_names(self) -> list[str]:
        """losses_by_domain, and with the sweep layer_sensitivity and ge_m_curve."""
        return list(self.FIGURES) if self.sweep_layer is not None else ["losses_by_domain"]

    def _figures(self, names: list[str]) -> dict[str, plt.Figure]:
        tag = f"{self.name}, mode {self.cfg.mode}"
        draw = {
            "losses_by_domain": lambda: domain_losses_figure(
                self.losses, title=f"{self.name}: clean vs layers {self.cfg.layers} ({self.cfg.mode})"),
            "layer_sensitivity": lambda: layer_sensitivity_figure(
                self.sweep_layer, title=f"Only layer l uses layer 0's K/V ({tag})"),
            "ge_m_curve": lambda: ge_m_figure(self.sweep_ge_m, float(self.overall["clean_loss"]),
                                              title=f"Layers ≥ m use layer 0's K/V ({tag})"),
        }
        return {name: draw[name]() for name in names}

    def save(self, run_dir: str | Path) -> dict[str, Any]:
        """Write what ``geomlens kv`` writes into ``run_dir`` (per_segment.csv, losses.csv, the
        sweep tables, figures/*.png) and return the summary (with its ``figures`` list)."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.per_segment.to_csv(run_dir / "per_segment.csv", index=False)
        self.losses.to_csv(run_dir / "losses.csv", index=False)
        if self.sweep_layer is not None and self.sweep_ge_m is not None:
            self.sweep_layer.to_csv(run_dir / "sweep_layer.csv", index=False)
            self.sweep_ge_m.to_csv(run_dir / "sweep_ge_m.csv", index=False)
        figures = self.save_figures(run_dir)
        summary = self.summary
        summary["figures"] = figures
        return summary
