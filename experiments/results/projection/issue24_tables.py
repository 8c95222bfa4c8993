"""Markdown tables of the issue-24 runs copied into experiments/results/projection/issue24/.

    python experiments/results/projection/issue24_tables.py experiments/results/projection/issue24

Writes tables.md there: the evidence table per model (every layer), the stitching accuracies per
run and over runs, and the alignment hit rates per seed pair. Reads only the copied CSVs; a
stitching run copied without its figure gets one drawn from its CSV
(`geomlens.projection.figures.stitch_figure`, what ``geomlens stitch`` writes as stitch.png).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from geomlens.figures import save_figure
from geomlens.projection.figures import stitch_figure


def _md(df: pd.DataFrame, digits: int = 3) -> str:
    df = df.copy()
    for c in df.columns:
        if df[c].dtype.kind == "f":
            df[c] = df[c].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


def evidence(out: Path) -> list[str]:
    parts = []
    for f in sorted(out.glob("evidence_*_evidence.csv")):
        t = pd.read_csv(f)
        name = f.name.split("_evidence.csv")[0]
        n_perm = int(t["n_permutations"].max())
        p_min = 1 / (1 + n_perm)
        g = t.assign(below=t["value"] < t["baseline"]).groupby(["kind", "metric"], sort=False)
        summ = g.agg(layers=("layer", "size"), value_mean=("value", "mean"),
                     baseline_mean=("baseline", "mean"),
                     layers_p_below_0001=("p", lambda p: int((p < 0.001).sum())),
                     layers_p_min=("p", lambda p: int((p <= p_min * (1 + 1e-9)).sum())),
                     layers_below_baseline=("below", "sum")).reset_index()
        every = t[["kind", "layer", "metric", "value", "ci_low", "ci_high", "baseline", "p", "n_units"]].copy()
        every["p"] = every["p"].map(lambda v: f"{v:.4f}")
        parts += [f"### {name}\n", f"{n_perm} permutations: smallest possible p = 1/{1 + n_perm} = {p_min:.4f}; "
                  "layers_p_below_0001 = layers with p < 0.001\n",
                  _md(summ), "", "<details><summary>every layer</summary>\n", _md(every), "\n</details>\n"]
    return parts


def _t_ci(v: np.ndarray) -> str:
    if len(v) < 2:
        return f"{v.mean():.3f}"
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return f"{v.mean():.3f} [{v.mean() - half:.3f}, {v.mean() + half:.3f}]"


def stitch(out: Path) -> list[str]:
    rows, per_run = [], []
    for f in sorted(out.glob("stitch_*_stitch.csv")):
        t = pd.read_csv(f).assign(run=f.name.split("_stitch.csv")[0])
        png = f.with_suffix(".png")
        if not png.exists():
            save_figure(stitch_figure(t, title=t["run"].iloc[0]), png)
        rows.append(t)
        for d, df in t.groupby("direction"):
            per_run.append({"run": t["run"].iloc[0], "direction": d, "splits": len(df),
                            "acc_a": df["acc_a"].mean(), "acc_translated": df["acc_translated"].mean(),
                            "acc_perm_mean": df["acc_perm_mean"].mean(), "acc_perm_q95": df["acc_perm_q95"].mean(),
                            "acc_ceiling": df["acc_ceiling"].mean(), "p_max": df["p"].max()})
    if not rows:
        return []
    allr = pd.concat(rows)
    is_s = allr["run"].str.contains("smollm2").to_numpy()
    a_to_b = (allr["direction"] == "a->b").to_numpy()
    allr["from"] = np.where(~is_s, "micro -> micro", np.where(a_to_b, "smollm2 -> micro", "micro -> smollm2"))
    over = []
    for key, df in allr.groupby("from"):
        over.append({"translation": key, "n (runs x splits)": len(df),
                     **{k: _t_ci(df[k].to_numpy(float)) for k in
                        ("acc_a", "acc_translated", "acc_perm_mean", "acc_ceiling")},
                     "p range": f"{df['p'].min():.4f}-{df['p'].max():.4f}",
                     "chance": f"{df['chance'].iloc[0]:.2f}"})
    return ["### per run (mean over split seeds)\n", _md(pd.DataFrame(per_run)), "",
            "### over runs and split seeds (mean, t 95% CI)\n", _md(pd.DataFrame(over)), "",
            "<details><summary>every split</summary>\n",
            _md(allr[["run", "direction", "split_seed", "n_test", "acc_a", "acc_translated",
                      "acc_translated_lo", "acc_translated_hi", "acc_perm_mean", "acc_perm_q95", "p",
                      "acc_ceiling"]]), "\n</details>\n"]


def align(out: Path) -> list[str]:
    rows = []
    for f in sorted(out.glob("align_*_alignment_layers.csv")):
        t = pd.read_csv(f).assign(pair=f.name.split("_alignment_layers.csv")[0])
        rows.append(t)
    if not rows:
        return []
    t = pd.concat(rows)
    cols = ["pair", "kind", "space", "diag_score", "offdiag_score", "row_hit_rate", "row_hit_null",
            "row_hit_p", "identity_accuracy", "identity_null", "identity_p", "matched_score",
            "null_mean", "p_value", "n_permutations", "pairs"]
    mean = t[t["kind"] == "mean"][cols]
    neurons = []
    for f in sorted(out.glob("align_*_alignment_neurons.csv")):
        n = pd.read_csv(f).assign(pair=f.name.split("_alignment_neurons.csv")[0])
        neurons.append(n.groupby(["pair", "kind"], as_index=False)[
            ["neuron_corr", "neuron_corr_null", "neuron_corr_raw", "neuron_corr_raw_null",
             "topk_overlap", "topk_overlap_random"]].mean())
    t["n_layers"] = t["pairs"].str.split().str.len()
    across = t.groupby(["kind", "space"], sort=False).apply(lambda df: pd.Series({
        "pairs": len(df), "layers": int(df["n_layers"].sum()),
        "row_hits": int(round((df["row_hit_rate"] * df["n_layers"]).sum())),
        "row_hits_null": (df["row_hit_null"] * df["n_layers"]).sum(),
        "row_hit_p": " / ".join(f"{v:.3f}" for v in df["row_hit_p"]),
        "hungarian_hits": int(round((df["identity_accuracy"] * df["n_layers"]).sum())),
        "hungarian_hits_null": (df["identity_null"] * df["n_layers"]).sum(),
        "hungarian_p": " / ".join(f"{v:.3f}" for v in df["identity_p"]),
        "n_permutations": int(df["n_permutations"].min())}), include_groups=False).reset_index()
    return ["### diagonal hits across the seed pairs (nulls = expected hits under the permutation null)\n",
            _md(across, 2), "",
            "### layer matching, kinds averaged (`mean`)\n", _md(mean, 4), "",
            "### per kind\n", _md(t[t["kind"] != "mean"][cols], 4), "",
            "### neurons within matched layers (mean over matched layer pairs)\n",
            _md(pd.concat(neurons), 4) if neurons else "", ""]


def main(out: Path) -> None:
    text = ["# Issue 24 runs: tables (generated by issue24_tables.py)\n", "## Evidence\n", *evidence(out),
            "## Stitching\n", *stitch(out), "## Alignment\n", *align(out)]
    (out / "tables.md").write_text("\n".join(text) + "\n")
    print(out / "tables.md")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
