"""Native code: small C++ accelerators for the per-row work that torch can neither vectorize nor
fuse: top-K selection with bucket sums (``rank.cpp``), centered average ranks (``ranks.cpp``)
and the permutation null of the rank metrics (``permnull.cpp``).

They are accelerators only: each has a torch implementation that gives bitwise the same
numbers (tests compare them, and a whole ``geomlens analyze`` with and without them), and every
caller falls back to it when `library` returns None: no C++ compiler, a failed build, or
``GEOMLENS_NATIVE=0``. Unavailability is said once, in one log line.

Build: `torch.utils.cpp_extension.load` (with ninja, a dependency) compiles a source on first
use (``-O3 -ffp-contract=off``, so float arithmetic rounds like torch's; ``-march=native`` when
the compiler accepts it) and links it against torch, whose thread pool the code runs on
(``at::parallel_for``, `rows.h`). The build goes into a private cache,
``$GEOMLENS_CACHE/native`` (default ``~/.cache/geomlens/native``): the folder must belong to
the user and has mode 0700 (created so; one others could write is emptied and closed), one
sub-folder per hash of the sources, flags, compiler and torch version, and the library's
SHA-256, written after the build, is checked before every load (a mismatch rebuilds the
folder from scratch).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

from geomlens.paths import cache_root

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
SOURCES = {"rank": "rank.cpp", "ranks": "ranks.cpp", "permnull": "permnull.cpp"}
"""Library name -> its source (every one includes ``rows.h``)."""
FLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno")
"""Compiler flags (no -ffast-math, no FMA contraction: results must round like torch's)."""
TUNE = "-march=native"
"""Added when the compiler accepts it (vector gathers); the build is retried without it."""


class Unavailable(RuntimeError):
    """Why the native code cannot be used here (said once, then the torch path runs)."""


def cache_dir() -> Path:
    return cache_root() / "native"


def _private(folder: Path) -> Path:
    """``folder``, created with mode 0700. One of ours that others may read or write (made by
    an older geomlens) is emptied and closed to them: what it held could be anyone's. One that
    belongs to another user raises `Unavailable`."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid():
        raise Unavailable(f"{folder} belongs to uid {info.st_uid}, not to you")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(folder, 0o700)
        for entry in folder.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return folder


def _key(name: str) -> str:
    """Hash of everything that changes the library: sources, flags, compiler, torch."""
    compiler = os.environ.get("CXX", "c++")
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    except OSError as exc:
        raise Unavailable(f"no C++ compiler ({compiler}: {exc.strerror})") from None
    parts = [(HERE / SOURCES[name]).read_bytes(), (HERE / "rows.h").read_bytes(),
             " ".join((*FLAGS, TUNE)).encode(), version.encode(), torch.__version__.encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(folder: Path, name: str) -> Path | None:
    """The library in ``folder`` if its SHA-256 is the one recorded at its build."""
    target, digest = folder / f"geomlens_{name}.so", folder / "sha256"
    if target.exists() and digest.exists() and digest.read_text().strip() == _digest(target):
        return target
    return None


def _build(name: str) -> Path:
    """The library ``name`` in the private cache, built when absent. A library whose SHA-256
    is not the recorded one (it changed after its build) is deleted and built again. Builds go
    to a fresh folder renamed into place, so concurrent processes never see half of one."""
    cache = _private(cache_dir())
    folder = cache / f"{name}-{_key(name)}"
    found = _verified(folder, name)
    if found is not None:
        return found
    shutil.rmtree(folder, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))  # mode 0700
    try:
        (tmp / "sha256").write_text(_digest(_compile(name, tmp)))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process installed it first: use theirs (verified below)
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found = _verified(folder, name)
    if found is None:
        raise Unavailable(f"{folder} changed during the build")
    return found


def _compile(name: str, folder: Path) -> Path:
    """`torch.utils.cpp_extension.load` of ``name``'s source into ``folder`` (with the ninja of
    the ``ninja`` package when none is on PATH)."""
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            raise Unavailable("no ninja (pip install ninja)") from None
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
    # cpp_extension skips the build of a name it built before in this process: forget it
    cpp_extension.JIT_EXTENSION_VERSIONER.entries.pop(f"geomlens_{name}", None)
    for flags in ([*FLAGS, TUNE], list(FLAGS)):
        try:
            return Path(cpp_extension.load(
                name=f"geomlens_{name}", sources=[str(HERE / SOURCES[name])],
                build_directory=str(folder), extra_cflags=flags,
                extra_include_paths=[str(HERE)], is_python_module=False, verbose=False))
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            error = exc
    raise Unavailable(f"the build failed ({' '.join(str(error).split())[:200]})")


@lru_cache(maxsize=None)
def library(name: str) -> ctypes.CDLL | None:
    """The native library ``name`` (``"rank"``, ``"ranks"``, ``"permnull"``), or None."""
    if os.environ.get("GEOMLENS_NATIVE", "1") == "0":
        return None
    try:
        return ctypes.CDLL(str(_build(name)))
    except (Unavailable, OSError) as exc:
        _say_unavailable(str(exc))
        return None


@lru_cache(maxsize=1)
def _say_unavailable(reason: str) -> None:
    logger.warning("geomlens native code unavailable, using the torch path (same results, "
                   "slower): %s", reason)


def usable(*tensors: torch.Tensor) -> bool:
    """True when every tensor is a contiguous CPU tensor (what the native code reads)."""
    return all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)


def ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if t is None else t.data_ptr())


def run_rows(fn: Callable[[int, int], int], n_rows: int) -> None:
    """``fn(0, n_rows)`` (the native code splits the rows over torch's threads); raise if it
    returns non-zero."""
    if fn(0, n_rows):
        raise MemoryError("native code failed (workspace allocation or bad arguments)")
