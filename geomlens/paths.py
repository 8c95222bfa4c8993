"""Where geomlens keeps files it can rebuild: ``$GEOMLENS_CACHE`` or ``~/.cache/geomlens``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache root: ``$GEOMLENS_CACHE`` if set, else ``~/.cache/geomlens``."""
    root = os.environ.get("GEOMLENS_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "geomlens"
