"""The one place figures are written: `save_figure` (tight layout, PNG at 120 dpi, closed).

Every thread's ``figures.py`` builds matplotlib Figures and saves them through this helper, so
a notebook can show a Figure inline and a run directory gets the same picture as a file.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt


def save_figure(fig: plt.Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (parents created), close it, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
