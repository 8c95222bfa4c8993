"""Table 6.2 (CPU scale) from the runs of experiments/configs/knn_heads_cpu.yaml.

    python experiments/results/make_table62.py [runs/knn_heads_cpu]

Writes, next to this file: table62_cpu.md (validation loss mean ± std over seeds, perplexity,
accuracy, head parameters, tokens/s, the thesis's numbers), table62_cpu.csv (per run),
table62_cpu_val_loss.png (validation-loss curves per head, mean ± sd over seeds) and
table62_cpu_sigma_vs_frequency.png (learned σ_v against training-token frequency, seed 0).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from transformer_lens import HookedTransformerConfig  # noqa: E402
from transformer_lens.components import Embed  # noqa: E402

from geomlens.heads import build_head, list_heads  # noqa: E402
from geomlens.training.figures import draw_sigma_vs_frequency  # noqa: E402
from geomlens.training.result import sigma_count_spearman  # noqa: E402

HERE = Path(__file__).parent
#: the thesis's validation losses (different model sizes, data and budgets: not comparable).
THESIS_DRAFT = {"linear": 4.02, "sigma": 4.01, "hybrid": 3.93}
THESIS_FINAL = {"linear": 2.84, "tied": 2.89, "sq_dist_bias": 3.01}
#: how the committed runs were made (edit when rerunning).
PROVENANCE = (
    "These runs used the first implementation of `geomlens.heads.distance` (autograd through the "
    "matmul-identity formula). The current fused op computes the same function (equal up to float "
    "rounding) with a hand-written backward and is 1.3-1.5x faster for the distance heads (see "
    "`benchmarks/results/heads.json`), so the tokens/s column understates the current code."
)


def thesis_params(head: str) -> int:
    """Head parameters at the thesis's |V| = 50,000, d = 768 (eqs 5.12-5.15)."""
    cfg = HookedTransformerConfig(n_layers=1, d_model=768, d_head=64, n_heads=12, d_vocab=50_000,
                                  n_ctx=8, act_fn="silu", normalization_type="RMS", device="cpu")
    with torch.device("meta"):
        return build_head(head, cfg, Embed(cfg)).n_params()


def load_runs(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, curves = [], []
    for summary_path in sorted(root.glob("*/summary.json")):
        run = summary_path.parent
        cfg = json.loads((run / "config.json").read_text())
        summary = json.loads(summary_path.read_text())
        rows.append({"run": run.name, "head": cfg["head"], "seed": cfg["seed"], **summary})
        m = pd.read_csv(run / "metrics.csv")
        m = m[m["val_loss"].notna()].assign(head=cfg["head"], seed=cfg["seed"])
        curves.append(m)
    if not rows:
        raise SystemExit(f"No finished runs (summary.json) under {root}")
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


def sigma_correlations(root: Path) -> dict[str, tuple[float, int]]:
    """Spearman ρ between learned σ_v and training count (`sigma_count_spearman`), mean over
    seeds, per σ head."""
    out: dict[str, list[float]] = {}
    for kernel_path in sorted(root.glob("*/kernel.pt")):
        head = json.loads((kernel_path.parent / "config.json").read_text())["head"]
        k = torch.load(kernel_path, weights_only=True)
        out.setdefault(head, []).append(sigma_count_spearman(k["sigma"], k["counts"]))
    return {h: (float(np.mean(v)), len(v)) for h, v in out.items()}


def main(root: Path) -> None:
    runs, curves = load_runs(root)
    runs.to_csv(HERE / "table62_cpu.csv", index=False)
    order = [h for h in list_heads() if h in set(runs["head"])]
    g = runs.groupby("head")
    cfg0 = json.loads((root / runs["run"].iloc[0] / "config.json").read_text())
    rho = sigma_correlations(root)
    lines = [
        "# Table 6.2 at CPU scale: LM heads on micro-1m",
        "",
        f"Runs: `{root}` (`experiments/configs/knn_heads_cpu.yaml`). {cfg0['model']}, "
        f"{cfg0['split']}, d_vocab {runs['d_vocab'].iloc[0]} (the {runs['d_vocab'].iloc[0] - 1} most "
        f"frequent training tokens of the SmolLM2 tokenizer + 1 OOV id; "
        f"{100 * runs['val_oov_fraction'].mean():.1f}% of held-out targets are OOV), "
        f"{cfg0['steps']} steps x {cfg0['batch_size']} x {cfg0['seq_len']} tokens "
        f"= {runs['tokens'].iloc[0]:,} training tokens, lr {cfg0['lr']}, CPU (1 thread per run, "
        "2 runs at a time on a shared 2-core machine). Validation: the last 2% of the stream, "
        f"{cfg0['eval_tokens']} tokens in fixed windows. Mean ± std (ddof=1) over seeds.",
        "",
        "| head | logits | val loss | val ppl | top-1 acc | seeds | head params (here) | head params at V=50,000, d=768 | tokens/s | thesis draft | thesis final |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    formula = {"linear": "W_U h + b", "tied": "W_E h", "neg_dist": "−d", "sigma": "−d·σ_v",
               "linear_scale": "−d·f(h)", "hybrid": "−d·σ_v·f(h)", "gaussian": "−d²/(2σ_v²)",
               "context_mlp": "−d·MLP(h)", "sq_dist_bias": "−d² + b_v"}
    for h in order:
        r = g.get_group(h)
        loss = f"{r['val_loss'].mean():.3f} ± {r['val_loss'].std(ddof=1):.3f}" if len(r) > 1 else f"{r['val_loss'].mean():.3f}"
        lines.append(
            f"| {h} | {formula.get(h, '')} | {loss} | {r['val_perplexity'].mean():.1f} | "
            f"{r['val_accuracy'].mean():.3f} | {len(r)} | {int(r['head_params'].iloc[0]):,} | "
            f"{thesis_params(h):,} | {r['tokens_per_s'].mean():.0f} | "
            f"{THESIS_DRAFT.get(h, '')} | {THESIS_FINAL.get(h, '')} |"
        )
    lines += [
        "",
        "The thesis columns come from other model sizes, data and training budgets (earlier draft "
        "and final thesis); they are listed for orientation only and are **not comparable** with "
        "this CPU-scale run.",
        "tokens/s: training tokens per second of train-step time (evaluation excluded), per run; "
        "it depends on the load from other processes on the shared machine, so use "
        "`benchmarks/bench_heads.py` for head-vs-head speed.",
        "",
        PROVENANCE,
        "",
        "Learned σ_v vs training-token count (Spearman ρ, mean over seeds): "
        + ", ".join(f"{h} {v:+.3f} (n={n})" for h, (v, n) in rho.items()),
        "",
        "![val loss](table62_cpu_val_loss.png)",
        "![sigma vs frequency](table62_cpu_sigma_vs_frequency.png)",
    ]
    (HERE / "table62_cpu.md").write_text("\n".join(lines) + "\n")

    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(8, 5))
    sns.lineplot(data=curves[curves["step"] > 0], x="tokens", y="val_loss", hue="head",
                 hue_order=order, errorbar="sd", ax=ax)
    ax.set(xlabel="training tokens", ylabel="validation loss (nats)", title="micro-1m, CPU scale")
    fig.tight_layout()
    fig.savefig(HERE / "table62_cpu_val_loss.png", dpi=120)

    kernels = sorted(root.glob("*seed=0*/kernel.pt"))
    if kernels:
        fig, axes = plt.subplots(1, len(kernels), figsize=(4.5 * len(kernels), 4), squeeze=False)
        for ax, path in zip(axes[0], kernels):
            head = json.loads((path.parent / "config.json").read_text())["head"]
            k = torch.load(path, weights_only=True)
            draw_sigma_vs_frequency(ax, k["sigma"], k["counts"], title=f"{head} (ρ={rho[head][0]:+.2f})")
        fig.tight_layout()
        fig.savefig(HERE / "table62_cpu_sigma_vs_frequency.png", dpi=120)
    print((HERE / "table62_cpu.md").read_text())


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/knn_heads_cpu"))
