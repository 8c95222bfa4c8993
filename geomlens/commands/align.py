"""`geomlens align`: match the layers and neurons of two models that share a vocabulary, in
embedding space and on raw vectors (Dar et al. 2022). Flags: `geomlens.projection.config.AlignConfig`."""

from __future__ import annotations

from pathlib import Path

KIND = "align"


def headline(summary: dict, run_dir: Path) -> str:
    import pandas as pd

    table = pd.DataFrame(summary["layer_matching"]).T
    return (f"{summary['model_a']} vs {summary['model_b']} ({summary['shared_vocab']})\n"
            + table.to_string(float_format=lambda x: f"{x:.4g}")
            + f"\nheatmap: {run_dir / 'alignment_heatmap.png'}")
