"""`geomlens project`: attention and MLP parameters read as vocabulary items (Dar et al. 2022),
with no forward pass. Flags: `geomlens.projection.config.ProjectConfig`."""

from __future__ import annotations

from pathlib import Path

KIND = "project"


def headline(summary: dict, run_dir: Path) -> str:
    lines = [f"{summary['n_rows']} rows ({', '.join(summary['kinds'])}); "
             f"first entries of each kind:"]
    lines += [f"  {key}: {tokens}" for key, tokens in list(summary.get("examples", {}).items())[:12]]
    lines.append(f"table: {run_dir / 'projection.parquet'} (and .csv)")
    return "\n".join(lines)
