"""Which TransformerLens is installed, read from package metadata.

TransformerLens 4's ``__init__`` raises ``ImportError`` on any removed name (``HookedTransformer``),
so even ``hasattr`` cannot probe it; the installed version decides instead.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from geomlens.errors import InputError, MissingPackageError

BACKENDS = ("auto", "tl3", "tl4")
INSTALL = {"tl3": "pip install 'transformer-lens>=3.9,<4'",
           "tl4": "pip install 'transformer-lens>=4,<5'"}


def tl_major() -> int:
    """Major version of the installed TransformerLens."""
    try:
        return int(version("transformer-lens").split(".")[0])
    except PackageNotFoundError:
        raise MissingPackageError("TransformerLens is not installed: "
                                  f"{INSTALL['tl3']} (or {INSTALL['tl4']}).") from None


def installed_backend() -> str:
    return "tl3" if tl_major() < 4 else "tl4"


def resolve_backend(backend: str) -> str:
    """``"auto"`` -> the installed one; a backend that is not installed is a one-line error."""
    if backend not in BACKENDS:
        raise InputError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    have = installed_backend()
    if backend in ("auto", have):
        return have
    raise InputError(f"backend={backend!r} needs TransformerLens {backend[2]}.x, but "
                     f"{version('transformer-lens')} is installed: {INSTALL[backend]}")
