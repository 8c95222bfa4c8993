"""One lock per run directory, so two processes never run the same directory at once.

The lock is an ``fcntl.flock`` on a hidden file next to the directory (``runs/.x.lock`` for
``runs/x``), held for the whole run: the kernel releases it when the process ends, however it
ends, so a killed run never leaves a stale lock. `geomlens run` takes the lock of each point
before running it (a second runner on the same ``out`` skips to other points, then waits), and
a resumed run takes it before touching its directory. Locks are re-entrant within a process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from geomlens.errors import InputError

_held: dict[str, list[int]] = {}  # lock path -> [fd, depth]


class RunBusyError(InputError):
    """Another process holds the run directory's lock."""


def lock_path(run_dir: str | Path) -> Path:
    """The lock file of ``run_dir``: a hidden sibling, so the directory itself stays clean."""
    path = Path(run_dir).absolute()
    return path.parent / f".{path.name}.lock"


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if text:
            return f" (pid {text})"
    return ""


@contextlib.contextmanager
def run_lock(run_dir: str | Path, *, wait: bool = False) -> Iterator[None]:
    """Hold ``run_dir``'s lock inside the block; with ``wait=False`` a lock held by another
    process raises `RunBusyError` at once, with ``wait=True`` this waits for it."""
    path = lock_path(run_dir)
    key = str(path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RunBusyError(f"{run_dir} is being run by another process{_holder(fd)}; wait "
                               "for it to finish, or choose another --out.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = [fd, 1]
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def is_locked(run_dir: str | Path) -> bool:
    """True if another process holds ``run_dir``'s lock right now."""
    try:
        with run_lock(run_dir, wait=False):
            return False
    except RunBusyError:
        return True
