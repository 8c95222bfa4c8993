"""The one run lifecycle: every command and every `geomlens run` point goes through `execute`.

    validate  the config's inputs (device, model name, layers, files, lengths), before anything
              is written: a bad input fails with a one-line error and leaves no directory;
    create    the run directory with config.json and env.json (seed, git hash, environment);
              a new run never overwrites an earlier one (``out-2``...), a resumed one must
              hold the same config;
    seed      python, numpy and torch, from the config's ``seed``, the same way every time;
    run       the command's ``run(cfg, run_dir)``;
    finish    ``summary.json`` and the ``done`` marker, then the batch records of a command
              that keeps them are deleted (unless ``keep_records``); on an error (or Ctrl-C,
              SIGTERM, a full disk) a ``failed`` marker holding the message instead, so
              `geomlens run` reruns or resumes it.
"""

from __future__ import annotations

import contextlib
import logging
import random
from pathlib import Path
from typing import Any

from geomlens.errors import InputError
from geomlens.rundir import (
    RunMode,
    check_out_path,
    clear_failed,
    create_run_dir,
    mark_done,
    mark_failed,
    write_json,
)
from geomlens.runner.command import Command, get_command
from geomlens.runner.locks import run_lock
from geomlens.runner.record_log import RECORDS_DIR, RecordLog

logger = logging.getLogger(__name__)


#: seeds torch, numpy (mod 2**32) and python all accept
MAX_SEED = 2**63 - 1


def check_seed(seed: Any) -> None:
    """A seed every generator accepts: an integer in [0, 2**63)."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"--seed {seed} is out of range; give an integer from 0 to 2**63-1.")


def seed_everything(seed: int | None) -> None:
    """Seed python's ``random``, numpy and torch (CPU and CUDA) with ``seed``."""
    if seed is None:
        return
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def validate_inputs(kind: Command, cfg: Any, out: str | Path | None = None) -> str | None:
    """Every check that needs no run directory; returns the resolved device (or None)."""
    if out is not None:
        check_out_path(out)
    check_seed(getattr(cfg, "seed", None))
    device = None
    if hasattr(cfg, "device"):
        from geomlens.device import resolve_device

        device = str(resolve_device(cfg.device))
    if kind.validate is not None:
        kind.validate(cfg)
    return device


def execute(
    kind: str | Command, cfg: Any, out: str | Path, *, mode: RunMode = "new", is_main: bool = True,
    keep_records: bool = False,
) -> tuple[Path, dict]:
    """Validate, create the run dir, seed, run, then write summary.json + done (or failed).

    A run that raises (or is stopped by Ctrl-C / SIGTERM, see `geomlens.runner.signals`) is
    marked ``failed`` with its one-line message, and the error is re-raised with the run
    directory attached (``exc.run_dir``). Reusing ``out`` (``mode="resume"``/``"error"``)
    holds its lock (`geomlens.runner.locks`) for the whole run.

    Args:
        kind: A run command or its registered name.
        cfg: The kind's dataclass config (from `geomlens.config.build_config`).
        out: The requested run directory.
        mode: "new" (a fresh sibling if ``out`` is used), "resume" (reuse ``out`` if it holds
            the same config), "error" (refuse a used ``out``).
        is_main: False on torchrun ranks > 0, which neither create nor mark the directory.
        keep_records: Keep ``run_dir/records`` of a command that keeps batch records
            (`Command.keeps_records`) once the run is done; by default it is deleted then.

    Returns:
        (the run directory used, the summary).
    """
    kind = get_command(kind) if isinstance(kind, str) else kind
    if not isinstance(cfg, kind.config_cls):
        raise TypeError(f"command {kind.name!r} takes a {kind.config_cls.__name__}")
    device = validate_inputs(kind, cfg, out if is_main else None)
    if not is_main:
        return _run(kind, cfg, Path(out), is_main=False, keep_records=True)
    with contextlib.ExitStack() as stack:
        if mode != "new":
            stack.enter_context(run_lock(out))
        run_dir = create_run_dir(out, config=cfg, seed=getattr(cfg, "seed", None),
                                 device=device, mode=mode)
        clear_failed(run_dir)
        return _run(kind, cfg, run_dir, is_main=True, keep_records=keep_records)


def _run(kind: Command, cfg: Any, run_dir: Path, *, is_main: bool,
         keep_records: bool) -> tuple[Path, dict]:
    try:
        seed_everything(getattr(cfg, "seed", None))
        summary = kind.run(cfg, run_dir) or {}
        if is_main:
            write_json(run_dir / "summary.json", summary)
            mark_done(run_dir)
            if kind.keeps_records and not keep_records:
                RecordLog(run_dir / RECORDS_DIR).remove()
    except BaseException as exc:
        if is_main:
            try:
                mark_failed(run_dir, exc)
            except OSError as marker_error:  # the error itself says why; keep it
                logger.warning("could not mark %s failed: %s", run_dir, marker_error)
            with contextlib.suppress(AttributeError, TypeError):
                exc.run_dir = run_dir
        raise
    return run_dir, summary
