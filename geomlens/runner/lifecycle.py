"""The one run lifecycle: every command and every `geomlens run` point goes through `execute`.

    validate  the config's inputs (device, model name, layers, files, lengths), before anything
              is written: a bad input fails with a one-line error and leaves no directory;
    create    the run directory with config.json and env.json (seed, git hash, environment);
              a new run never overwrites an earlier one (``out-2``...), a resumed one must
              hold the same config;
    seed      python, numpy and torch, from the config's ``seed``, the same way every time;
    run       the command's ``run(cfg, run_dir)``;
    finish    ``summary.json`` and the ``done`` marker; on an error (or Ctrl-C) a ``failed``
              marker holding the message instead, so `geomlens run` reruns or resumes it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from geomlens.errors import InputError
from geomlens.rundir import (
    RunDirError,
    RunMode,
    clear_failed,
    create_run_dir,
    mark_done,
    mark_failed,
    write_json,
)
from geomlens.runner.command import Command, get_command


def seed_everything(seed: int | None) -> None:
    """Seed python's ``random``, numpy and torch (CPU and CUDA) with ``seed``."""
    if seed is None:
        return
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def validate_inputs(kind: Command, cfg: Any) -> str | None:
    """Every check that needs no run directory; returns the resolved device (or None)."""
    device = None
    if hasattr(cfg, "device"):
        from geomlens.device import resolve_device

        device = str(resolve_device(cfg.device))
    if kind.validate is not None:
        kind.validate(cfg)
    return device


def execute(
    kind: str | Command, cfg: Any, out: str | Path, *, mode: RunMode = "new", is_main: bool = True
) -> tuple[Path, dict]:
    """Validate, create the run dir, seed, run, then write summary.json + done (or failed).

    Args:
        kind: A run command or its registered name.
        cfg: The kind's dataclass config (from `geomlens.config.build_config`).
        out: The requested run directory.
        mode: "new" (a fresh sibling if ``out`` is used), "resume" (reuse ``out`` if it holds
            the same config), "error" (refuse a used ``out``).
        is_main: False on torchrun ranks > 0, which neither create nor mark the directory.

    Returns:
        (the run directory used, the summary).
    """
    kind = get_command(kind) if isinstance(kind, str) else kind
    if not isinstance(cfg, kind.config_cls):
        raise TypeError(f"command {kind.name!r} takes a {kind.config_cls.__name__}")
    device = validate_inputs(kind, cfg)
    seed = getattr(cfg, "seed", None)
    run_dir = Path(out)
    if is_main:
        try:
            run_dir = create_run_dir(out, config=cfg, seed=seed, device=device, mode=mode)
        except RunDirError as exc:
            raise InputError(str(exc)) from None
        clear_failed(run_dir)
    seed_everything(seed)
    try:
        summary = kind.run(cfg, run_dir) or {}
    except BaseException as exc:
        if is_main:
            mark_failed(run_dir, exc)
        raise
    if is_main:
        write_json(run_dir / "summary.json", summary)
        mark_done(run_dir)
    return run_dir, summary
