"""Where the TransformerLens 3 / 4 parity tests leave their figures for the other backend's run
(``$GEOMLENS_PARITY_DIR``, default ``.parity/`` at the repository root; `scripts/test.sh` runs
TransformerLens 3 first, then 4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geomlens.backend import installed_backend


def parity_dir() -> Path:
    root = Path(__file__).resolve().parents[1]
    path = Path(os.environ.get("GEOMLENS_PARITY_DIR", root / ".parity"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def other_backend_file(stem: str, suffix: str) -> Path:
    """``<stem>-<other backend><suffix>`` in `parity_dir`, or a skip naming it."""
    other = "tl3" if installed_backend() == "tl4" else "tl4"
    path = parity_dir() / f"{stem}-{other}{suffix}"
    if not path.exists():
        pytest.skip(f"no {other} figures at {path} (scripts/test.sh writes them)")
    return path
