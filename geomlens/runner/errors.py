"""How the command line reports a failure: one line on stderr and an exit code.

    2    a user error (`GeomlensError`, a bad path or a full disk, too little memory, a bad
         flag): what went wrong and what to do instead
    1    an internal error (a bug): its type and message, and ``--debug`` for the traceback
    130  Ctrl-C (SIGINT), 143 SIGTERM, 129 SIGHUP: the run is marked failed ("interrupted")

``--debug`` (or ``GEOMLENS_DEBUG=1``) lets the exception through with its traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys
from typing import NoReturn

from geomlens.errors import GeomlensError
from geomlens.rundir import os_message
from geomlens.runner.signals import exit_code

DEBUG_ENV = "GEOMLENS_DEBUG"
USER_ERROR, INTERNAL_ERROR = 2, 1
_OOM_WORDS = ("can't allocate memory", "out of memory", "not enough memory")
_MEMORY_HINT = ("reduce the sizes (--batch-size, --seq-len, --max-tokens, --n-segments...) or "
                "use a machine with more memory")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block) with exit code 2."""

    def error(self, message: str) -> NoReturn:
        usage_error(self.prog, message)


def usage_error(prog: str, message: str) -> NoReturn:
    """Exit 2 with ``prog: error: message (see prog --help)`` on one line."""
    text = " ".join(message.split())
    raise SystemExit(_print_exit(f"{prog}: error: {text} (see {prog} --help)"))


def _print_exit(line: str) -> int:
    sys.stderr.write(line + "\n")
    return USER_ERROR


def one_line(text: object) -> str:
    """Lines joined with "; " and whitespace collapsed."""
    lines = [" ".join(line.split()) for line in str(text).splitlines()]
    return "; ".join(line for line in lines if line)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in _OOM_WORDS))


def explain(exc: BaseException) -> tuple[str, int]:
    """(the one-line message, the exit code) for an exception that ended a command."""
    where = getattr(exc, "run_dir", None)
    marked = f" (run directory {where} is marked failed)" if where is not None else ""
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted{marked}", exit_code(exc)
    if isinstance(exc, GeomlensError):
        return f"error: {one_line(exc)}{marked}", USER_ERROR
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno == errno.EPIPE:  # `geomlens models | head`: the reader left
            return "", 0
        return f"error: {one_line(os_message(exc))}{marked}", USER_ERROR
    if _is_oom(exc):
        first = one_line(exc).split(". ")[0][:200] or type(exc).__name__
        return f"error: out of memory ({first}); {_MEMORY_HINT}{marked}", USER_ERROR
    text = one_line(exc)[:500]
    return (f"internal error: {type(exc).__name__}: {text}{marked}; rerun with --debug (or "
            f"{DEBUG_ENV}=1) for the traceback and report it", INTERNAL_ERROR)
