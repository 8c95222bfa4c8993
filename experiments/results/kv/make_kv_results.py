"""Reproduce experiments/results/kv: first-layer K/V on pretrained models, and Table 6.3.

    OMP_NUM_THREADS=2 PYTHONPATH=. python experiments/results/kv/make_kv_results.py kv smollm2-135m all
    OMP_NUM_THREADS=2 PYTHONPATH=. python experiments/results/kv/make_kv_results.py table63

``kv MODEL MODE [--layers SPEC] [--no-sweep]`` runs `geomlens.kv.run_kv` into runs/kv/MODEL_MODE[_SPEC] (a fresh run dir
with config.json, env.json, summary.json, done) and copies its tables, figures and summary here.
``table63`` collects runs/kv_train_cpu (experiments/configs/kv_train_cpu.yaml) into
table63_cpu.csv and table63_cpu_val_loss.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
SIZES = {  # per domain; 5 domains
    "smollm2-135m": {"n_segments": 6, "max_tokens": 64, "batch_size": 8},
    "gemma3-270m": {"n_segments": 4, "max_tokens": 64, "batch_size": 4},
}


def run_model(model: str, mode: str, sweep: bool, layers: str = "all") -> None:
    from geomlens.kv import KVConfig, run_kv
    from geomlens.rundir import execute_run

    cfg = KVConfig(model=model, mode=mode, layers=layers, sweep=sweep, **SIZES[model])
    name = f"{model}_{mode}" + ("" if layers == "all" else f"_{layers}")
    run_dir, summary = execute_run(Path("runs/kv") / name, cfg, run_kv, device="cpu")
    dest = HERE / name
    (dest / "figures").mkdir(parents=True, exist_ok=True)
    for name in ("losses.csv", "sweep_layer.csv", "sweep_ge_m.csv", "summary.json", "config.json"):
        if (run_dir / name).exists():
            shutil.copy(run_dir / name, dest / name)
    for png in (run_dir / "figures").glob("*.png"):
        shutil.copy(png, dest / "figures" / png.name)
    print(f"{model} {mode}: clean {summary['clean_loss']:.3f} patched {summary['patched_loss']:.3f} "
          f"({summary['wall_time_s']:.0f} s) -> {dest}")


def table63(root: Path = Path("runs/kv_train_cpu")) -> None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows, curves = [], []
    for d in sorted(root.glob("*/summary.json")):
        s = json.loads(d.read_text())
        cfg = json.loads((d.parent / "config.json").read_text())
        variant = "first-layer K/V" if cfg["kv_layers"] else "standard"
        rows.append({"variant": variant, "seed": cfg["seed"], "val_loss": s["val_loss"],
                     "val_accuracy": s["val_accuracy"], "total_params": s["total_params"],
                     "trainable_params": s.get("trainable_params", s["total_params"]),
                     "kv_unused_params": s.get("kv_unused_params", 0),
                     "train_time_s": s["train_time_s"], "tokens": s["tokens"]})
        m = pd.read_csv(d.parent / "metrics.csv").dropna(subset=["val_loss"])
        curves.append(m.assign(variant=variant, seed=cfg["seed"]))
    table = pd.DataFrame(rows).sort_values(["variant", "seed"])
    table.to_csv(HERE / "table63_cpu.csv", index=False)
    agg = table.groupby("variant")["val_loss"].agg(["mean", "std", "count"])
    print(agg.round(4))
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(pd.concat(curves), x="step", y="val_loss", hue="variant", units="seed",
                 estimator=None, marker="o", ax=ax)
    ax.set(ylabel="validation loss (nats)", title="micro-1m, 3 seeds: standard vs first-layer K/V")
    fig.tight_layout()
    fig.savefig(HERE / "table63_cpu_val_loss.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    kv = sub.add_parser("kv")
    kv.add_argument("model", choices=sorted(SIZES))
    kv.add_argument("mode", choices=["all", "prev"])
    kv.add_argument("--no-sweep", action="store_true")
    kv.add_argument("--layers", default="all", help="LayerMap spec (default all)")
    sub.add_parser("table63")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.what == "kv":
        run_model(args.model, args.mode, sweep=not args.no_sweep, layers=args.layers)
    else:
        table63()


if __name__ == "__main__":
    main()
