"""Small C kernels for the per-row work that torch can neither vectorize nor fuse: top-K
selection with bucket sums (`rank.c`) and the permutation null of the rank metrics
(`permnull.c`).

Each source is compiled on first use with the system C compiler (``$CC`` or ``cc``;
``-O3 -march=native -ffp-contract=off``, so float arithmetic rounds exactly like torch's
eager ops) into ``$GEOMLENS_CACHE/native`` (default ``~/.cache/geomlens/native``), keyed by a
hash of the source, the flags, the compiler and the CPU, and loaded with `ctypes` (which
releases the GIL, so `run_rows` splits the rows over ``torch.get_num_threads()`` Python
threads). Without a compiler, or with ``GEOMLENS_NATIVE=0``, `library` returns None and every
caller uses its torch implementation, which gives the same numbers (tested).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

logger = logging.getLogger(__name__)

FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC")
"""Compiler flags (no -ffast-math: results must round like torch's)."""


def cache_dir() -> Path:
    root = os.environ.get("GEOMLENS_CACHE") or Path.home() / ".cache" / "geomlens"
    return Path(root) / "native"


def _cpu_id() -> str:
    try:
        flags = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")]
        return flags[0] if flags else platform.processor()
    except OSError:
        return platform.processor()


def _build(source: Path, compiler: str) -> Path:
    text = source.read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(b"\0".join([text, " ".join(FLAGS).encode(), version.encode(),
                                     _cpu_id().encode()])).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        subprocess.run([compiler, *FLAGS, "-o", str(out), str(source), "-lm"], check=True,
                       capture_output=True, text=True)
        os.replace(out, target)  # atomic: concurrent builders never see a partial file
    return target


@lru_cache(maxsize=None)
def library(name: str) -> ctypes.CDLL | None:
    """The compiled kernel ``name`` (``"rank"``, ``"permnull"``), or None when unavailable."""
    if os.environ.get("GEOMLENS_NATIVE", "1") == "0":
        return None
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        logger.info("no C compiler: using the torch implementations")
        return None
    try:
        return ctypes.CDLL(str(_build(Path(__file__).with_name(f"{name}.c"), compiler)))
    except (OSError, subprocess.CalledProcessError) as exc:
        logger.warning("native kernel %s unavailable (%s): using torch", name, exc)
        return None


def usable(*tensors: torch.Tensor) -> bool:
    """True when every tensor is a contiguous CPU tensor (what the kernels read)."""
    return all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)


def ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if t is None else t.data_ptr())


@lru_cache(maxsize=None)
def _pool(n_workers: int) -> ThreadPoolExecutor:
    """A thread pool kept for the process (starting threads for every call costs more than a
    small call)."""
    return ThreadPoolExecutor(n_workers, thread_name_prefix="geomlens-native")


def run_rows(fn: Callable[[int, int], int], n_rows: int) -> None:
    """Call ``fn(r0, r1)`` on disjoint row ranges covering ``range(n_rows)``, in parallel
    over ``torch.get_num_threads()`` threads; raise if any call returns non-zero."""
    n_threads = max(1, min(torch.get_num_threads(), n_rows))
    bounds = [n_rows * i // n_threads for i in range(n_threads + 1)]
    ranges = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if len(ranges) == 1:
        codes = [fn(*ranges[0])]
    else:  # the calling thread takes the first range; pooled threads (kept) the others
        futures = [_pool(len(ranges) - 1).submit(fn, *r) for r in ranges[1:]]
        codes = [fn(*ranges[0])] + [f.result() for f in futures]
    if any(codes):
        raise MemoryError("native kernel failed to allocate its workspace")
