"""Ctrl-C and SIGTERM as exceptions, so an interrupted run is marked ``failed`` ("interrupted")
by the lifecycle and the command line exits 130 (SIGINT) or 143 (SIGTERM) without a traceback.

A cluster scheduler stops a job with SIGTERM (SLURM, Kubernetes) and a closed terminal sends
SIGHUP; Python's default for both is to die at once, leaving a run directory unmarked.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: signals turned into `Interrupted` while `interrupts_as_exceptions` is active
HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The process received a stop signal; like Ctrl-C, it is not an ``Exception``, so code
    that handles errors lets it through to the lifecycle and the command line."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted ({signal.Signals(signum).name})")

    def __str__(self) -> str:
        return str(self.args[0])


def exit_code(exc: KeyboardInterrupt) -> int:
    """The shell's exit code for a process stopped by ``exc``'s signal (128 + its number)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def _raise(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """Raise `Interrupted` on SIGTERM and SIGHUP inside the block (main thread only; handlers
    restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise) for sig in HANDLED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
