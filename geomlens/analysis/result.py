"""`AnalysisResult`: what `analyze_tokens` measured, as a notebook object and as run files.

    result = geomlens.analyze(model, texts=["The capital of France is", ...])
    result                      # HTML headline: the Table 6.1 rows (neg_dist) with CIs
    result.table()              # every (hidden, target, score) row of summary.json
    result.summary              # summary.json content (computed once)
    result.plot("layers")       # a matplotlib Figure (shown inline); result.plot() = all of them
    result.save("runs/mine")    # the files ``geomlens analyze`` writes, from the same code

The result holds its config, model info and layer count, so nothing is asked for twice.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from geomlens.analysis.calibration import CalibrationResult
from geomlens.analysis.config import AnalyzeConfig
from geomlens.analysis.figures import layer_ndcg_figure, metric_bar_figures
from geomlens.analysis.headline import format_table, headline_rows, headline_score
from geomlens.analysis.layer_summary import definition, layers_block, summarize_layer_lens
from geomlens.analysis.summary import summarize, table_frame, table_markdown
from geomlens.figures import save_figure
from geomlens.geometry.figures import layer_curve_figures
from geomlens.geometry.trajectory import summarize_layers
from geomlens.result import Result

#: figures `AnalysisResult.plot` draws, and the run-dir files `save` writes them to
FIGURES: dict[str, str] = {
    "metrics_by_score": "metrics_by_score.png", "metrics_by_domain": "metrics_by_domain.png",
    "step_norms": "step_norms.png", "inertia": "inertia.png", "lens_ranks": "lens_ranks.png",
    "layers": "layers.png",
}


@dataclass
class AnalysisResult(Result):
    """Everything `analyze_tokens` measured, with the config, model info and layer count it
    was measured with."""

    per_segment: pd.DataFrame
    """Mean of every metric per (segment, domain, hidden, target, score), plus n_positions."""
    controls: pd.DataFrame
    """Control means: one row per (hidden, target, score, variant, index)."""
    metrics: list[str]
    """Metric columns, in table order."""
    info: dict
    """Counts, the NDCG@full error bound (max / mean over positions), aliases."""
    per_token: pd.DataFrame | None = None
    """One row per (position, hidden, target, score) when ``cfg.keep_per_token``."""
    per_layer_tokens: pd.DataFrame | None = field(default=None, repr=False)
    """`trajectory_stats` rows with segment/domain columns when ``cfg.trajectories``."""
    layers: pd.DataFrame | None = field(default=None, repr=False)
    """`geomlens.analysis.layers.layer_ndcg` rows (one per sampled position, layer and lens)
    when ``cfg.layer_lens``."""
    calibration: CalibrationResult | None = field(default=None, repr=False)
    """Temperatures, calibrated JSD and the uniform reference when ``cfg.calibrate``."""
    cfg: AnalyzeConfig | None = field(default=None, repr=False)
    """The config the analysis ran with."""
    model_info: dict | None = field(default=None, repr=False)
    """`geomlens.models.model_info` of the model analysed."""
    n_layers: int | None = field(default=None, repr=False)
    """The model's number of blocks."""
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ tables

    def _config(self) -> AnalyzeConfig:
        return self.cfg if self.cfg is not None else AnalyzeConfig()

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json content (CIs over segments, controls, definitions; the ``layers`` block
        when the layer lens ran), computed once."""
        if "summary" not in self._cache:
            cfg = self._config()
            summary = summarize(self, cfg, model_info=self.model_info, n_layers=self.n_layers)
            if self.layers is not None:
                summary["layers"] = layers_block(self.layer_table)
                summary["definitions"]["layers"] = definition(
                    positions=cfg.layer_lens_positions, seed=cfg.seed,
                    topk=max(cfg.topk_exact, 10), gain=cfg.gain)
            self._cache["summary"] = summary
        return self._cache["summary"]

    @property
    def layer_table(self) -> pd.DataFrame | None:
        """NDCG of every lens by layer with 95% bootstrap CIs over segments (layers.csv)."""
        if self.layers is None:
            return None
        if "layer_table" not in self._cache:
            cfg = self._config()
            self._cache["layer_table"] = summarize_layer_lens(
                self.layers, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
        return self._cache["layer_table"]

    @property
    def per_layer(self) -> pd.DataFrame | None:
        """Mean and median of every trajectory statistic per layer (per_layer.csv)."""
        return None if self.per_layer_tokens is None else summarize_layers(self.per_layer_tokens)

    def table(self) -> pd.DataFrame:
        """One row per (hidden, target, score): 'mean [lo, hi]' for every metric."""
        return table_frame(self.summary)

    def headline(self) -> str:
        """The compact Table 6.1 rows as aligned text (what the CLI prints)."""
        return format_table(headline_rows([self.summary]), with_hidden=True)

    # ------------------------------------------------------------------ views

    def _repr_html_(self) -> str:
        s = self.summary
        info = s["info"]
        name = html.escape(str(s["model"].get("name")))
        lines = [f"<b>analyze</b> {name}: {info['n_segments']} segment(s), {info['n_positions']} "
                 f"positions; score <code>{headline_score(s)}</code>, means [95% bootstrap CI "
                 "over segments]"]
        rows = headline_rows([s], hiddens=tuple(dict.fromkeys(r["hidden"] for r in s["results"]
                                                              if r.get("hidden"))))
        text = format_table(rows, with_hidden=True).splitlines()
        lines.append("<pre>" + html.escape("\n".join(text)) + "</pre>")
        extra = [k for k, v in (("result.layer_table", self.layers), ("result.per_layer",
                 self.per_layer_tokens), ("result.calibration", self.calibration)) if v is not None]
        lines.append("Tables: <code>result.table()</code>, <code>result.per_segment</code>"
                     + "".join(f", <code>{html.escape(k)}</code>" for k in extra)
                     + f"; figures: <code>result.plot(name)</code> for {', '.join(self.figure_names())}")
        return "<div>" + "<br>".join(lines) + "</div>"

    def __repr__(self) -> str:
        return f"AnalysisResult({self.info.get('n_segments')} segments)\n{self.headline()}"

    def figure_names(self) -> list[str]:
        """The names `plot` takes for this result (what it measured)."""
        names = ["metrics_by_score", "metrics_by_domain"]
        if self.per_layer_tokens is not None:
            names += ["step_norms", "inertia", "lens_ranks"]
        if self.layers is not None:
            names.append("layers")
        return names

    def _figures(self, wanted: list[str]) -> dict[str, plt.Figure]:
        """The figures ``wanted`` (and their siblings drawn with them), for `Result.plot`."""
        figs: dict[str, plt.Figure] = {}
        if {"metrics_by_score", "metrics_by_domain"} & set(wanted):
            figs.update(metric_bar_figures(self.per_segment, self.metrics))
        if {"step_norms", "inertia", "lens_ranks"} & set(wanted):
            figs.update(layer_curve_figures(self.per_layer))
        if "layers" in wanted:
            title = str(self.summary["model"].get("name"))
            figs["layers"] = layer_ndcg_figure(self.layer_table, title=title)
        return figs

    # ------------------------------------------------------------------ files

    def save(self, run_dir: str | Path) -> dict[str, Any]:
        """Write what ``geomlens analyze`` writes into ``run_dir`` and return the summary (with
        its ``figures`` list) that the run writes as summary.json. per_token.parquet is written
        when the per-token table was kept in memory and the file is not there yet."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.per_token is not None and not (run_dir / "per_token.parquet").exists():
            self.per_token.to_parquet(run_dir / "per_token.parquet", index=False)
        self.per_segment.to_csv(run_dir / "per_segment.csv", index=False)
        self.controls.to_csv(run_dir / "controls.csv", index=False)
        if self.calibration is not None and not self.calibration.per_segment.empty:
            self.calibration.per_segment.to_csv(run_dir / "calibration_per_segment.csv", index=False)
        if self.per_layer_tokens is not None:
            self.per_layer.to_csv(run_dir / "per_layer.csv", index=False)
            summarize_layers(self.per_layer_tokens, by=("domain", "layer")).to_csv(
                run_dir / "per_layer_domain.csv", index=False)
        if self.layers is not None:
            self.layer_table.to_csv(run_dir / "layers.csv", index=False)
        figures = []
        for name, fig in self.plot().items():
            figures.append(run_dir / "figures" / FIGURES[name])
            _write(fig, figures[-1], bars=name.startswith("metrics_by"))
        summary = {**self.summary, "figures": [str(p.relative_to(run_dir)) for p in figures]}
        (run_dir / "table61.md").write_text(table_markdown(summary))
        return summary


def _write(fig: plt.Figure, path: Path, *, bars: bool) -> None:
    if bars:  # seaborn grids: 110 dpi with a tight bounding box, as they always were
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
    else:
        save_figure(fig, path)
