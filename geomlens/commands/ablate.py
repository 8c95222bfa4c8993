"""`geomlens ablate`: zero/mean/resample ablation of attention and MLP outputs; Δloss and
ΔNDCG@k per condition, heatmaps for a sweep. Flags: `AblateConfig`."""

from __future__ import annotations

from pathlib import Path

KIND = "ablate"


def headline(summary: dict, run_dir: Path) -> str:
    return (f"ablate: {summary['n_conditions']} conditions; clean loss {summary['clean_loss']:.4f}, "
            f"clean {summary['metric']} {summary['clean_metric']:.4f}; table: {run_dir / 'ablation.csv'}")
