"""Parameters in embedding space: the runs behind experiments/results/projection/README.md.

    OMP_NUM_THREADS=1 python experiments/results/projection/make_projection_results.py [STEP ...]

STEP: train | project | align | report (default: all four, in that order). Until `geomlens
project` / `geomlens align` are wired to the CLI, this calls the run functions directly:
each run dir under runs/projection/ gets config.json, summary.json (with wall_s) and the run
function's outputs; `report` copies the small ones here and writes the markdown tables.

train    two micro-1m runs (linear head, vocab 8192) with the settings of
         experiments/configs/knn_heads_cpu.yaml, seeds 0 and 1, into runs/proj_micro_seed{0,1};
         and the same two seeds 4x longer (480 steps) into runs/proj_micro480_seed{0,1}
project  smollm2-135m and gemma3-270m, 3-4 layers, k=20, ov/qk among the 8,192 most frequent
         corpus tokens; plus exact whole-vocabulary ov/qk for two SmolLM2 heads
align    micro seed 0 vs seed 1 (mean and best layer scores), smollm2-135m vs micro seed 0,
         and the 480-step seed pair (20 permutations each)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
RUNS = ROOT / "runs" / "projection"
MICRO = [ROOT / "runs" / f"proj_micro_seed{s}" for s in (0, 1)]
#: the same two seeds trained 4x longer (480 steps; beyond knn_heads_cpu.yaml, for comparison)
MICRO_LONG = [ROOT / "runs" / f"proj_micro480_seed{s}" for s in (0, 1)]

PROJECT = {
    "smollm2": dict(model="smollm2-135m", layers="0,10,20,29", neurons="0-3", k=20, device="cpu"),
    "smollm2_exact_pairs": dict(model="smollm2-135m", what=["ov", "qk"], layers="0,20",
                                heads="0,4", k=20, pair_tokens=None, device="cpu"),
    "gemma3": dict(model="gemma3-270m", layers="0,8,17", neurons="0-3", k=20, device="cpu"),
}
ALIGN = {
    "micro_seed0_vs_seed1": dict(model_a=str(MICRO[0]), model_b=str(MICRO[1])),
    "micro_seed0_vs_seed1_best": dict(model_a=str(MICRO[0]), model_b=str(MICRO[1]), reduce="best"),
    "smollm2_vs_micro_seed0": dict(model_a="smollm2-135m", model_b=str(MICRO[0])),
    "micro480_seed0_vs_seed1": dict(model_a=str(MICRO_LONG[0]), model_b=str(MICRO_LONG[1])),
}


def _run(name: str, cfg, fn) -> dict:
    run_dir = RUNS / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    t0 = time.perf_counter()
    summary = fn(cfg, run_dir)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(name, json.dumps(summary, default=str)[:600], flush=True)
    return summary


def train() -> None:
    from geomlens.training.command import run_training
    from geomlens.training.config import TrainConfig

    settings = yaml.safe_load((ROOT / "experiments/configs/knn_heads_cpu.yaml").read_text())["config"]
    long = {"steps": 480, "warmup": 48, "eval_every": 160, "checkpoint_every": 240}
    jobs = [(seed, d, {}) for seed, d in enumerate(MICRO)]
    jobs += [(seed, d, long) for seed, d in enumerate(MICRO_LONG)]
    for seed, run_dir, extra in jobs:
        if (run_dir / "checkpoints" / "latest.pt").exists():
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg = TrainConfig.from_dict({**settings, "head": "linear", "seed": seed, **extra})
        (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
        summary = run_training(cfg, run_dir)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


def project() -> None:
    from geomlens.projection import ProjectConfig, run_project

    for name, kw in PROJECT.items():
        _run(name, ProjectConfig(**kw), run_project)


def align() -> None:
    from geomlens.projection import AlignConfig, run_align

    for name, kw in ALIGN.items():
        _run(name, AlignConfig(n_permutations=20, device="cpu", **kw), run_align)


def _examples_md(table: pd.DataFrame, n: int = 10) -> str:
    """One markdown row per parameter and direction: its top-n tokens (pairs)."""
    from geomlens.projection.project import top_tokens_table

    rows = top_tokens_table(table, n).astype(object)
    lines = ["| " + " | ".join(rows.columns) + " |", "|" + "---|" * len(rows.columns)]
    for r in rows.itertuples(index=False):
        cells = ["" if pd.isna(v) else str(v).replace("|", "\\|") for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    for name in PROJECT:
        table = pd.read_parquet(RUNS / name / "projection.parquet")
        if name != "smollm2_exact_pairs":  # a readable excerpt: neuron 0, heads 0/1 only
            keep = (table["neuron"].fillna(0) == 0) & (table["head"].fillna(0) <= 1)
            table = table[keep]
        (HERE / f"projection_{name}.md").write_text(_examples_md(table) + "\n")
        shutil.copy(RUNS / name / "summary.json", HERE / f"projection_{name}_summary.json")
    for name in ALIGN:
        for f in ("alignment_layers.csv", "alignment_neurons.csv", "alignment_heatmap.png",
                  "alignment_heatmap_raw.png", "summary.json"):
            if (RUNS / name / f).exists():
                shutil.copy(RUNS / name / f, HERE / f"{name}_{f}")


if __name__ == "__main__":
    steps = sys.argv[1:] or ["train", "project", "align", "report"]
    for step in steps:
        {"train": train, "project": project, "align": align, "report": report}[step]()
