"""Small C kernels for the per-row work that torch can neither vectorize nor fuse: top-K
selection with bucket sums (`rank.c`) and the permutation null of the rank metrics
(`permnull.c`).

Each source is compiled on first use with the system C compiler (``$CC`` or ``cc``;
``-O3 -march=native -ffp-contract=off``, so float arithmetic rounds exactly like torch's
eager ops) into ``$GEOMLENS_CACHE/native`` (default ``~/.cache/geomlens/native``), keyed by a
hash of the source, the flags, the compiler and the CPU, and loaded with `ctypes`. With
``-fopenmp`` (when the compiler has it; ``GEOMLENS_OPENMP=0`` turns it off) a kernel splits its
rows over torch's own OpenMP threads (``rows.h``): the threads torch just used, instead of
Python threads that would compete with them while they spin-wait (which made a kernel 2x
slower between compiled ops). Otherwise ctypes releases the GIL and `run_rows` splits the rows
over ``torch.get_num_threads()`` Python threads. Without a compiler, or with ``GEOMLENS_NATIVE=0``, `library` returns None and every
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
OPENMP = "-fopenmp"
"""Added when the compiler accepts it: the kernels then split their rows over torch's OpenMP
threads (``rows.h``); otherwise `run_rows` splits them over Python threads."""


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
    """Compile ``source`` (with OpenMP when the compiler has it and ``GEOMLENS_OPENMP`` is not
    0) into the cache, keyed by everything that changes the binary."""
    text = source.read_bytes() + b"\0".join(h.read_bytes() for h in sorted(source.parent.glob("*.h")))
    openmp = os.environ.get("GEOMLENS_OPENMP", "1") != "0"
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(b"\0".join([text, " ".join(FLAGS).encode(), version.encode(),
                                     _cpu_id().encode(), str(openmp).encode()])).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        flag_sets = [(*FLAGS, OPENMP), FLAGS] if openmp else [FLAGS]
        for i, flags in enumerate(flag_sets):
            run = subprocess.run([compiler, *flags, "-o", str(out), str(source), "-lm"],
                                 capture_output=True, text=True)
            if run.returncode == 0:
                break
            if i == len(flag_sets) - 1:
                raise subprocess.CalledProcessError(run.returncode, run.args, run.stdout, run.stderr)
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


def parallel(lib: ctypes.CDLL) -> bool:
    """True when ``lib`` splits its rows over OpenMP threads itself (see ``rows.h``)."""
    return bool(lib.geomlens_parallel())


def run_rows(fn: Callable[[int, int], int], n_rows: int, lib: ctypes.CDLL | None = None) -> None:
    """Call ``fn(r0, r1)`` on row ranges covering ``range(n_rows)``: once, over all of them,
    when ``lib`` (the library ``fn`` calls) splits rows over OpenMP threads itself; else on
    disjoint ranges in parallel over ``torch.get_num_threads()`` Python threads. Raise if a
    call returns non-zero."""
    if lib is not None and parallel(lib):
        if fn(0, n_rows):
            raise MemoryError("native kernel failed to allocate its workspace")
        return
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
