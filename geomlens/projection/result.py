"""The projection thread's notebook objects: what `geomlens.projection.api` returns, and what the
commands write (``save`` is the code the CLI runs).

    result = geomlens.project(model, ["mlp_out"], layers=[20], neurons=range(4))
    result                      # HTML headline: the first parameters' top tokens
    result.table                # the projection table (token text beside token_id)
    result.plot()               # a matplotlib Figure, shown inline; nothing written
    result.save("runs/mine")    # the files ``geomlens project`` writes

`ProjectionResult` (project), `EvidenceResult` (evidence), `StitchResult` (stitch) and
`AlignmentResult` (align) each hold their tables as DataFrames and the settings they were
measured with, so nothing is asked for twice.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from geomlens.projection.alignment import Alignment
from geomlens.projection.figures import (
    alignment_heatmap_figure,
    evidence_figure,
    stitch_figure,
    top_tokens_figure,
)
from geomlens.projection.project import headline_examples, top_tokens_table
from geomlens.projection.stitch import seed_summary
from geomlens.result import Result, headline_html

# ---------------------------------------------------------------------------------- project


@dataclass(repr=False)
class ProjectionResult(Result):
    """Projected parameters (`geomlens.projection.project.project_parameters`)."""

    table: pd.DataFrame
    """One row per (parameter, direction, rank): `geomlens.projection.project.COLUMNS` (token
    text in ``token``/``src_token``, ids in ``token_id``/``src_token_id``)."""
    model_name: str
    pair_search: list[dict] = field(default_factory=list)
    """Per ov/qk head: the share of the token x token product the exact search evaluated."""
    pair_tokens: int | None = None
    """How many frequent tokens ov/qk pairs were searched among (None = the whole vocabulary)."""

    FIGURES: ClassVar[dict[str, str]] = {"top_tokens": "top_tokens.png"}

    def top_tokens(self, n: int = 10) -> pd.DataFrame:
        """One row per parameter and direction with its best ``n`` tokens joined (for reading)."""
        return top_tokens_table(self.table, n=n)

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json content (without timings)."""
        fractions = [s["fraction_evaluated"] for s in self.pair_search]
        return {
            "model": self.model_name, "kinds": list(dict.fromkeys(self.table["kind"])),
            "n_rows": len(self.table), "rows_per_kind": self.table.groupby("kind").size().to_dict(),
            "pair_tokens": self.pair_tokens, "pair_heads_searched": len(self.pair_search),
            "pair_fraction_evaluated_mean": float(np.mean(fractions)) if fractions else None,
            "examples": headline_examples(self.table),
        }

    def headline(self) -> str:
        """The first parameter of each kind with its top tokens."""
        ex = self.summary["examples"]
        return "\n".join(f"{key}: {tokens}" for key, tokens in list(ex.items())[:12])

    def _repr_html_(self) -> str:
        title = (f"<b>project</b> {html.escape(self.model_name)}: {len(self.table)} rows "
                 f"({html.escape(', '.join(self.summary['kinds']))}); first parameter of each kind")
        return headline_html(title, self.headline(), tables=["result.table", "result.top_tokens(n)"],
                             figures=self.figure_names())

    def __repr__(self) -> str:
        return f"ProjectionResult({self.model_name}, {len(self.table)} rows)\n{self.headline()}"

    def _figures(self, names: list[str]) -> dict[str, plt.Figure]:
        return {"top_tokens": top_tokens_figure(self.table)}

    def save(self, run_dir: str | Path) -> dict[str, Any]:
        """projection.parquet, projection.csv and the figure; returns the summary."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.table.to_parquet(run_dir / "projection.parquet", index=False)
        self.table.to_csv(run_dir / "projection.csv", index=False)
        return {**self.summary, "tables": ["projection.parquet", "projection.csv"],
                "figures": self.save_figures(run_dir)}


# ---------------------------------------------------------------------------------- evidence


@dataclass(repr=False)
class EvidenceResult(Result):
    """Dar et al.'s evidence table (`geomlens.projection.evidence.evidence_table`)."""

    table: pd.DataFrame
    """One row per (kind, layer, metric): value, bootstrap CI, shuffled baseline, p."""
    model_name: str
    layers: list[int]
    n_permutations: int
    inputs: dict = field(default_factory=dict)
    """What the hidden states were collected over (segments, tokens, what was cut)."""

    FIGURES: ClassVar[dict[str, str]] = {"evidence": "evidence.png"}
    P_LEVEL: ClassVar[float] = 0.001
    """The level the headline counts layers below (the issue's p < 0.001)."""

    @property
    def p_min(self) -> float:
        """The smallest p the permutation test can give: 1 / (1 + n_permutations)."""
        return 1 / (1 + self.n_permutations)

    def by_kind(self) -> pd.DataFrame:
        """Per kind: layers, mean value and baseline over layers, layers with p < 0.001, layers
        at the smallest possible p, layers whose value is below the baseline."""
        return self.table.groupby(["kind", "metric"], sort=False).agg(
            n_layers=("layer", "size"), value=("value", "mean"), baseline=("baseline", "mean"),
            layers_p_below=("p", lambda p: int((p < self.P_LEVEL).sum())),
            layers_p_min=("p", lambda p: int((p <= self.p_min * (1 + 1e-9)).sum())),
            layers_below_baseline=("value", lambda v: int((v < self.table.loc[v.index, "baseline"]).sum())),
        ).reset_index()

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json content (without timings)."""
        by_kind = self.by_kind().set_index("kind").drop(columns="metric")
        return {"model": self.model_name, "layers": self.layers, "corpus": self.inputs,
                "n_permutations": self.n_permutations, "p_min": self.p_min, "p_level": self.P_LEVEL,
                "by_kind": by_kind.to_dict(orient="index")}

    def headline(self) -> str:
        """The per-kind table (`by_kind`) as aligned text."""
        return self.by_kind().to_string(index=False, float_format=lambda x: f"{x:.4g}")

    def _repr_html_(self) -> str:
        title = (f"<b>evidence</b> {html.escape(self.model_name)}: {len(self.layers)} layer(s), "
                 f"{self.n_permutations} permutations (smallest p {self.p_min:.2g}); means over layers, "
                 f"layers_p_below = layers with p &lt; {self.P_LEVEL:g}")
        return headline_html(title, self.headline(), tables=["result.table", "result.by_kind()"],
                             figures=self.figure_names())

    def __repr__(self) -> str:
        return f"EvidenceResult({self.model_name}, {len(self.layers)} layers)\n{self.headline()}"

    def _figures(self, names: list[str]) -> dict[str, plt.Figure]:
        return {"evidence": evidence_figure(self.table, title=self.model_name, p_level=self.P_LEVEL)}

    def save(self, run_dir: str | Path) -> dict[str, Any]:
        """evidence.csv and evidence.png; returns the summary."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(run_dir / "evidence.csv", index=False)
        return {**self.summary, "tables": ["evidence.csv"], "figures": self.save_figures(run_dir)}


# ---------------------------------------------------------------------------------- stitch


@dataclass(repr=False)
class StitchResult(Result):
    """A classifier carried from model A into model B (`geomlens.projection.stitch_command`)."""

    table: pd.DataFrame
    """One row per (split seed, direction): acc_a, acc_translated, acc_ceiling (each with a
    Wilson interval), the permuted null's mean and 95th percentile, p, chance."""
    model_a: str
    model_b: str
    shared_vocab: str
    inputs: dict = field(default_factory=dict)
    """Per model, the corpus segments the features were taken over."""

    FIGURES: ClassVar[dict[str, str]] = {"stitch": "stitch.png"}

    @property
    def by_direction(self) -> dict:
        """Per direction, each accuracy's mean over split seeds with a t 95% interval."""
        return seed_summary(self.table)

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json content (without timings)."""
        return {"model_a": self.model_a, "model_b": self.model_b, "shared_vocab": self.shared_vocab,
                "corpus": self.inputs, "by_direction": self.by_direction}

    def headline(self) -> str:
        """Per direction: mean [t 95% CI] over split seeds of every accuracy (no interval from
        one split), and the p range."""
        lines = []
        for direction, entry in self.by_direction.items():
            df = self.table[self.table["direction"] == direction]
            parts = [f"{k} {v['mean']:.3f}" + ("" if np.isnan(v["ci_low"]) else
                                               f" [{v['ci_low']:.3f}, {v['ci_high']:.3f}]")
                     for k, v in entry.items() if k != "p"]
            lines.append(f"{direction}: " + "; ".join(parts)
                         + f"; p {df['p'].min():.4g}-{df['p'].max():.4g}; chance {df['chance'].iloc[0]:.2f}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        title = (f"<b>stitch</b> a = {html.escape(self.model_a)}, b = {html.escape(self.model_b)} "
                 f"({html.escape(self.shared_vocab)}); {self.table['split_seed'].nunique()} split(s), "
                 f"{int(self.table['n_permutations'].iloc[0])} permutations")
        return headline_html(title, self.headline(), tables=["result.table", "result.by_direction"],
                             figures=self.figure_names())

    def __repr__(self) -> str:
        return f"StitchResult({self.model_a} -> {self.model_b})\n{self.headline()}"

    def _figures(self, names: list[str]) -> dict[str, plt.Figure]:
        return {"stitch": stitch_figure(self.table, title=f"a = {self.model_a}, b = {self.model_b}")}

    def save(self, run_dir: str | Path) -> dict[str, Any]:
        """stitch.csv and stitch.png; returns the summary."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(run_dir / "stitch.csv", index=False)
        return {**self.summary, "tables": ["stitch.csv"], "figures": self.save_figures(run_dir)}


# ---------------------------------------------------------------------------------- align


def _scores_long(al: Alignment) -> pd.DataFrame:
    """Every layer x layer score: kind, space, what (observed | null_mean), layer_a, layer_b."""
    rows = []
    for space, sc in al.spaces.items():
        for what, scores in (("observed", sc.scores), ("null_mean", sc.null_scores)):
            for key, S in scores.items():
                for (a, b), v in np.ndenumerate(S):
                    rows.append({"kind": key, "space": space, "what": what, "layer_a": a,
                                 "layer_b": b, "score": v})
    return pd.DataFrame(rows)


NEURON_COLUMNS = ("neuron_corr", "neuron_corr_null", "neuron_corr_raw", "neuron_corr_raw_null",
                  "topk_overlap", "topk_overlap_random")


@dataclass(repr=False)
class AlignmentResult(Result):
    """Two models' parameters aligned in embedding space (`geomlens.projection.alignment`)."""

    alignment: Alignment
    name_a: str
    name_b: str

    FIGURES: ClassVar[dict[str, str]] = {"heatmap": "alignment_heatmap.png",
                                         "heatmap_raw": "alignment_heatmap_raw.png"}

    def figure_names(self) -> list[str]:
        """heatmap, and heatmap_raw when the raw d_model baseline ran (same d_model)."""
        return ["heatmap", "heatmap_raw"] if self.alignment.raw_scores else ["heatmap"]

    @property
    def layers(self) -> pd.DataFrame:
        """`Alignment.layer_table`: per kind and space, matching, diagonal hit rates, nulls, p."""
        return self.alignment.layer_table()

    @property
    def neurons(self) -> pd.DataFrame:
        """Neuron matching per kind and matched layer pair."""
        return self.alignment.neurons

    @property
    def scores(self) -> pd.DataFrame:
        """Every layer x layer score, observed and the null's mean, in long form."""
        return _scores_long(self.alignment)

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json content (without timings)."""
        layers = self.layers
        head = layers[layers["kind"] == "mean"].set_index("space")
        neurons = self.neurons.groupby("kind")[list(NEURON_COLUMNS)].mean() if len(self.neurons) else pd.DataFrame()
        return {"model_a": self.name_a, "model_b": self.name_b, "shared_vocab": self.alignment.shared.note,
                "kinds": self.alignment.kinds, "reduce": self.alignment.reduce,
                "layer_matching": head.drop(columns=["kind"]).to_dict(orient="index"),
                "neurons": neurons.to_dict(orient="index")}

    def headline(self) -> str:
        """The kinds' mean: per space, matched pairs, diagonal hit rates (row-wise, Hungarian)
        with their nulls and p, matched score against the null."""
        cols = ["space", "diag_score", "offdiag_score", "row_hit_rate", "row_hit_null", "row_hit_p",
                "identity_accuracy", "identity_null", "identity_p", "matched_score", "null_mean",
                "p_value", "n_permutations", "pairs"]
        t = self.layers
        return t[t["kind"] == "mean"][cols].to_string(index=False, float_format=lambda x: f"{x:.4g}")

    def _repr_html_(self) -> str:
        al = self.alignment
        title = (f"<b>align</b> {html.escape(self.name_a)} vs {html.escape(self.name_b)} "
                 f"({html.escape(al.shared.note)}); kinds {html.escape(', '.join(al.kinds))}, "
                 f"|corr| reduced by {html.escape(al.reduce)}; the kinds' mean")
        return headline_html(title, self.headline(), tables=["result.layers", "result.neurons", "result.scores"],
                             figures=self.figure_names())

    def __repr__(self) -> str:
        return f"AlignmentResult({self.name_a} vs {self.name_b})\n{self.headline()}"

    def _figures(self, names: list[str]) -> dict[str, plt.Figure]:
        al, out = self.alignment, {}
        labels = {"label_a": self.name_a, "label_b": self.name_b}
        if "heatmap" in names:
            out["heatmap"] = alignment_heatmap_figure(
                al.scores, title=f"|corr| in embedding space ({al.reduce}); {al.shared.note}", **labels)
        if "heatmap_raw" in names:
            out["heatmap_raw"] = alignment_heatmap_figure(
                al.raw_scores, title=f"baseline: |corr| of raw d_model vectors ({al.reduce})", **labels)
        return out

    def save(self, run_dir: str | Path) -> dict[str, Any]:
        """alignment_layers.csv, alignment_neurons.csv, alignment_scores.csv and the heatmaps;
        returns the summary."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.layers.to_csv(run_dir / "alignment_layers.csv", index=False)
        self.neurons.to_csv(run_dir / "alignment_neurons.csv", index=False)
        self.scores.to_csv(run_dir / "alignment_scores.csv", index=False)
        tables = ["alignment_layers.csv", "alignment_neurons.csv", "alignment_scores.csv"]
        return {**self.summary, "tables": tables, "figures": self.save_figures(run_dir)}
