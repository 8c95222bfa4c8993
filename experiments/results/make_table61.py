"""Table 6.1, settled: the README headline, the full grid and the tied/untied figures, from runs.

    python experiments/results/make_table61.py --collect   # copy the runs' small files, then build
    python experiments/results/make_table61.py             # build from the copies

The runs are those of experiments/configs/table61_{smollm2,gemma3}_thesis.yaml,
tied_untied_analyze.yaml and tied_untied_checkpoints.yaml (`RUNS`, `CHECKPOINTS` below).
``--collect`` copies each run's summary.json, config.json, env.json, layers.csv and layers.png into
experiments/results/table61_runs/<name>/, so the tables can be rebuilt from the repository.

Writes (experiments/results/):
    table61.md                  the headline (`geomlens.analysis.headline`), settings, notes
    table61_full.csv            every (run, hidden, target, score) record: mean, CI, temperature,
                                calibrated JSD, permutation and random-matrix controls
    table61_full.md             the same grid, rank groups on one row, W_U = W_E folded
    tied_untied_training.csv/png  NDCG of one untied run's checkpoints against W_E and W_U
and replaces the README block between ``<!-- table61:begin -->`` and ``<!-- table61:end -->``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
COPIES = HERE / "table61_runs"
SMALL_FILES = ("summary.json", "config.json", "env.json", "layers.csv", "figures/layers.png")
MICRO = "runs/tied_untied_analyze/model=runs_tied_untied_cpu_seed={seed},head={head}"
RUNS: dict[str, str] = {
    "smollm2-135m": "runs/table61_smollm2_thesis",
    "gemma3-270m": "runs/table61_gemma3_thesis",
    **{f"micro-1m-{head}-s{seed}": MICRO.format(seed=seed, head=head)
       for head in ("tied", "linear") for seed in (0, 1, 2)},
}
"""Copy name -> run dir (relative to the repository root)."""
CHECKPOINTS = "runs/tied_untied_checkpoints"
GROUPS: dict[str, tuple[str, ...]] = {
    "smollm2-135m": ("smollm2-135m",),
    "gemma3-270m": ("gemma3-270m",),
    "micro-1m, tied head": tuple(f"micro-1m-tied-s{s}" for s in range(3)),
    "micro-1m, untied head": tuple(f"micro-1m-linear-s{s}" for s in range(3)),
}
"""Headline row label -> the copies it combines (seeds: mean, t-interval over seeds)."""
FALLBACK: dict[str, tuple[str, str]] = {
    "gemma3-270m": ("gemma3-270m (earlier run: 10 × 32 tokens, 10 permutations, no calibration)",
                    "gemma3"),
}
"""A group without a run -> (label, copy) of an earlier, smaller run to show instead."""
THESIS = [
    ("Llama-3.2-1B (thesis, final)", True, "0.921"),
    ("Llama-3.2-3B (thesis, final)", True, "0.934"),
    ("Llama-3.1-8B (thesis, final)", False, "0.120"),
]
"""The thesis's final-version NDCG of the distance ranking (its draft: 0.981 / 0.983 / 0.987 on
Llama-3.2; its notebook: 0.9989 with a linear gain)."""
BEGIN, END = "<!-- table61:begin -->", "<!-- table61:end -->"


def collect() -> None:
    for name, run in list(RUNS.items()) + [(f"checkpoints/{p.name}", str(p.relative_to(ROOT)))
                                           for p in sorted((ROOT / CHECKPOINTS).glob("*"))]:
        src = ROOT / run
        if not (src / "summary.json").exists():
            print(f"skip {name}: {src} has no summary.json", file=sys.stderr)
            continue
        dst = COPIES / name
        dst.mkdir(parents=True, exist_ok=True)
        for f in SMALL_FILES:
            if (src / f).exists():
                shutil.copy2(src / f, dst / Path(f).name)


def load(name: str) -> dict | None:
    path = COPIES / name / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def headline() -> tuple[list[dict], list[str]]:
    """Headline rows (ours, then the thesis's) and the notes under the table."""
    from geomlens.analysis.headline import grouped_rows

    groups = {label: [s for s in map(load, names) if s is not None]
              for label, names in GROUPS.items()}
    for label, (fallback_label, name) in FALLBACK.items():
        if not groups.get(label) and load(name) is not None:
            groups[fallback_label] = [load(name)]
    groups = {label + (f" ({len(runs)} seeds)" if len(runs) > 1 else ""): runs
              for label, runs in groups.items() if runs}
    rows, notes = grouped_rows(groups), []
    for label, summaries in groups.items():
        uniform = [r for s in summaries for r in s["results"] if r.get("score") == "uniform"]
        if uniform:
            mean = sum(u["overall"]["jsd"]["mean"] for u in uniform) / len(uniform)
            notes.append(f"{label}: JSD(p ‖ uniform) = {mean:.3f}")
    notes += [n for names in GROUPS.values() for n in map(scale_note, names) if n]
    rows += [{"model": m, "tied": t, "target": "–", "thesis": v} for m, t, v in THESIS]
    return rows, notes


def scale_note(name: str) -> str | None:
    """The scale and wall time of a copy that records its wall time (``wall_time.json``: the
    command, ``wall_s``, ``cpu_s`` and the machine, written by hand from ``/usr/bin/time``)."""
    path = COPIES / name / "wall_time.json"
    summary, config = load(name), COPIES / name / "config.json"
    if not path.exists() or summary is None or not config.exists():
        return None
    wall, cfg, info = json.loads(path.read_text()), json.loads(config.read_text()), summary["info"]
    return (f"{name}: {info['n_segments']:,} segments × {cfg['max_tokens']} tokens "
            f"({info['n_positions']:,} positions), {cfg['n_permutations']:,} permutations, layer "
            f"lens on {cfg['layer_lens_positions']:,} positions; wall time "
            f"{wall['wall_s'] / 60:.0f} min on {wall['machine']}")


def full_grid() -> pd.DataFrame:
    """One row per (copy, hidden, target, score) record of every summary."""
    out = []
    for name in RUNS:
        s = load(name)
        if s is None:
            continue
        alias = s["info"].get("target_alias", {})
        for r in s["results"]:
            row = {"run": name, "model": s["model"]["name"], "tied": s.get("tied_embeddings"),
                   "hidden": r.get("hidden"), "target": r.get("target"), "score": r["score"],
                   "same_as": alias.get(r.get("target"), r.get("target")),
                   "temperature": r.get("temperature"), "n_segments": r.get("n_segments")}
            for metric, v in r["overall"].items():
                row.update({metric: v["mean"], f"{metric}_lo": v["ci_low"], f"{metric}_hi": v["ci_high"]})
            perm = (r.get("controls") or {}).get("permutation", {}).get("ndcg@full")
            rand = (r.get("controls") or {}).get("random_matrix", {}).get("ndcg@full")
            row["perm_p"] = perm["p_value"] if perm else None
            row["perm_null_mean"] = perm["null_mean"] if perm else None
            row["random_matrix"] = rand["random"] if rand else None
            out.append(row)
    return pd.DataFrame(out)


def full_markdown(grid: pd.DataFrame) -> str:
    """The full grid, one row per (run, hidden, distinct target, rank group): the rank metrics
    once, the JSDs (raw / calibrated, temperature) of each score of the group in one cell."""
    from geomlens.analysis.agreement import rank_groups
    from geomlens.analysis.headline import cell

    if grid.empty:
        return "no runs\n"
    grid = grid[(grid.target == grid.same_as) | grid.target.isna()]
    named = grid[grid.score != "uniform"]
    group_of = rank_groups(sorted(set(named.score)))
    rank_cols = ["ndcg@1", "ndcg@10", "ndcg@100", "ndcg@full", "spearman", "top1", "top10"]
    lines = ["| run | hidden | target | scores | " + " | ".join(rank_cols)
             + " | JSD raw / calibrated (τ) | perm p | random matrix |", "|" + "---|" * 14]
    keys = named.assign(group=named.score.map(group_of)).groupby(
        ["run", "hidden", "target", "group"], sort=False)
    for (run, hidden, target, _), g in keys:
        first = g.iloc[0]
        cells = [cell(_ci(first, m)) for m in rank_cols]
        jsd = "; ".join(f"{r.score} {r.jsd:.3f} / {_num(r.get('jsd_calibrated'))} "
                        f"(τ {_num(r.get('temperature'), '.3g')})" for _, r in g.iterrows())
        lines.append(f"| {run} | {hidden} | {target} | {', '.join(g.score)} | "
                     + " | ".join(cells) + f" | {jsd} | {_num(first.perm_p, '.2g')} | "
                     f"{_num(first.random_matrix)} |")
    return "\n".join(lines) + "\n"


def _ci(row: pd.Series, metric: str) -> dict | None:
    if metric not in row or pd.isna(row[metric]):
        return None
    return {"mean": row[metric], "ci_low": row[f"{metric}_lo"], "ci_high": row[f"{metric}_hi"]}


def _num(value, fmt: str = ".3f") -> str:
    return "–" if value is None or pd.isna(value) else format(value, fmt)


def checkpoint_curve(folder: Path, stem: Path) -> pd.DataFrame:
    """NDCG@full / @10 of −d (h = ln_final) against W_E and W_U, and of the logit (dot with
    W_U), at every checkpoint of the untied run: a CSV and a seaborn figure."""
    rows = []
    for path in sorted(folder.glob("*/summary.json")):
        s = json.loads(path.read_text())
        for r in s["results"]:
            if r.get("hidden") != "ln_final" or r["score"] not in ("neg_dist", "dot"):
                continue
            for metric in ("ndcg@full", "ndcg@10"):
                v = r["overall"][metric]
                rows.append({"step": s["model"].get("step"), "target": r["target"],
                             "score": r["score"], "metric": metric, "mean": v["mean"],
                             "ci_low": v["ci_low"], "ci_high": v["ci_high"]})
    curve = pd.DataFrame(rows)
    if curve.empty:
        return curve
    curve.to_csv(stem.with_suffix(".csv"), index=False)
    import matplotlib.pyplot as plt
    import seaborn as sns

    curve["series"] = curve.score.map({"neg_dist": "−d"}).fillna("logit (h·W_U)") + " vs " + curve.target
    grid = sns.relplot(data=curve, x="step", y="mean", hue="series", col="metric", kind="line",
                       marker="o", height=3.2, aspect=1.3)
    grid.set_axis_labels("training step", "NDCG (ln_final vs final p)")
    grid.figure.suptitle("untied micro-1m: distance ranking along training", y=1.03)
    grid.figure.savefig(stem.with_suffix(".png"), dpi=120, bbox_inches="tight")
    plt.close(grid.figure)
    return curve


def write_outputs(rows: list[dict], notes: list[str], curve: pd.DataFrame, *, readme: Path,
                  table: Path, begin: str, end: str) -> None:
    """table61.md and the README block (the same headline)."""
    from geomlens.analysis.headline import format_table

    block = [format_table(rows, markdown=True), ""]
    block += [f"- {n}" for n in notes]
    if not curve.empty:
        last = curve[curve.step == curve.step.max()]
        block.append(f"- Along training (untied seed 0, {curve.step.nunique()} checkpoints): "
                     "`experiments/results/tied_untied_training.png`; at the last step "
                     + ", ".join(f"{r.score} vs {r.target} {r.metric} {r['mean']:.3f}"
                                 for _, r in last.iterrows() if r.metric == "ndcg@full"))
    text = "\n".join(block) + "\n"
    table.write_text("# Table 6.1 headline\n\nGenerated by `python experiments/results/"
                     "make_table61.py`; full grid: `table61_full.md` / `table61_full.csv`.\n\n"
                     + text)
    src = readme.read_text() if readme.exists() else ""
    if begin in src and end in src:
        head, rest = src.split(begin, 1)
        readme.write_text(head + begin + "\n" + text + end + rest.split(end, 1)[1])
    print(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collect", action="store_true", help="copy the runs' small files first")
    args = ap.parse_args(argv)
    if args.collect:
        collect()
    rows, notes = headline()
    grid = full_grid()
    grid.to_csv(HERE / "table61_full.csv", index=False)
    (HERE / "table61_full.md").write_text(full_markdown(grid))
    curve = checkpoint_curve(COPIES / "checkpoints", HERE / "tied_untied_training")
    write_outputs(rows, notes, curve, readme=ROOT / "README.md", table=HERE / "table61.md",
                  begin=BEGIN, end=END)


if __name__ == "__main__":
    main()
