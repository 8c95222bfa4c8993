"""Run directories: every command writes its outputs into one, next to its provenance.

A run directory holds
    config.json   the resolved config (everything needed to rerun it)
    env.json      seed, git hash, package versions, device, command line, start time
    done          a marker written when the run finished (its time)
    failed        instead of done, when the run raised: the time and the error message
plus the command's own outputs (tables, figures, summary.json, checkpoints).

Nothing is overwritten silently: `create_run_dir` with ``mode="new"`` picks a fresh
sibling (``out``, ``out-2``, ``out-3``...) and logs it; ``mode="resume"`` reuses a directory
only if its stored config matches; ``mode="error"`` refuses an existing non-empty dir.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

RunMode = Literal["new", "resume", "error"]
DONE, FAILED = "done", "failed"
_PACKAGES = ("geomlens", "torch", "transformer_lens", "transformers", "numpy", "pandas", "scipy", "datasets", "gguf")


class RunDirError(RuntimeError):
    """A run directory cannot be used as asked (it exists, or its config differs)."""


def to_jsonable(obj: Any) -> Any:
    """Turn dataclasses, paths, dtypes, devices and numpy/torch scalars into JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    return str(obj)


def git_info() -> dict[str, Any]:
    """Git hash and dirty flag of the checkout that holds this package (None outside git)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return {"git_hash": None, "git_dirty": None}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=10,
        )
        return {"git_hash": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_hash": None, "git_dirty": None}


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            out[name] = None
    return out


def environment(device: str | None = None) -> dict[str, Any]:
    """Everything about where a run happened that could change its numbers."""
    env: dict[str, Any] = {
        **git_info(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    env["device"] = device
    return env


def _is_empty(path: Path) -> bool:
    return not path.exists() or not any(path.iterdir())


def _fresh_sibling(path: Path) -> Path:
    i = 2
    while not _is_empty(path.with_name(f"{path.name}-{i}")):
        i += 1
    return path.with_name(f"{path.name}-{i}")


def create_run_dir(
    out: str | Path,
    *,
    config: Any,
    seed: int | None,
    device: str | None = None,
    mode: RunMode = "new",
) -> Path:
    """Create (or, with ``mode="resume"``, reopen) a run directory and write its provenance.

    Args:
        out: Requested directory.
        config: The resolved config (dataclass or dict); stored as ``config.json``.
        seed: The run's seed, stored in ``env.json``.
        device: The device the run uses.
        mode: ``"new"`` never touches an existing non-empty dir: it uses ``out-2``, ``out-3``...
            ``"resume"`` reuses ``out`` if its ``config.json`` equals ``config`` (else raises).
            ``"error"`` raises if ``out`` exists and is not empty.

    Returns:
        The directory actually used.
    """
    path = Path(out)
    cfg = to_jsonable(config)
    if not _is_empty(path):
        if mode == "error":
            raise RunDirError(f"{path} already holds a run; choose another --out or pass --resume.")
        if mode == "resume":
            stored = path / "config.json"
            if stored.exists() and json.loads(stored.read_text()) != cfg:
                raise RunDirError(
                    f"Cannot resume {path}: its config.json differs from the requested config. "
                    "Use a new --out directory."
                )
        else:
            new = _fresh_sibling(path)
            logger.warning("%s already holds a run; writing this run to %s instead.", path, new)
            path = new
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    env = environment(device)
    env["seed"] = seed
    env_path = path / "env.json"
    if env_path.exists() and mode == "resume":
        prior = json.loads(env_path.read_text())
        env["resumed_from"] = prior.get("started_at")
        history = prior.get("history", []) + [{k: prior.get(k) for k in ("started_at", "git_hash")}]
        env["history"] = history
    env_path.write_text(json.dumps(to_jsonable(env), indent=2))
    return path


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as pretty JSON (dataclasses/tensors converted)."""
    Path(path).write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=True))


def mark_done(run_dir: str | Path) -> None:
    """Write the ``done`` marker (sweeps skip runs that have it)."""
    (Path(run_dir) / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")


def is_done(run_dir: str | Path) -> bool:
    return (Path(run_dir) / DONE).exists()


def mark_failed(run_dir: str | Path, error: BaseException) -> None:
    """Write the ``failed`` marker: when, and the error's one-line message."""
    message = "interrupted (KeyboardInterrupt)" if isinstance(error, KeyboardInterrupt) \
        else f"{type(error).__name__}: {error}"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    (Path(run_dir) / FAILED).write_text(f"{stamp}\n{message.strip()}\n")


def clear_failed(run_dir: str | Path) -> None:
    """Remove a ``failed`` marker left by an earlier attempt (a resumed run starts over)."""
    (Path(run_dir) / FAILED).unlink(missing_ok=True)


def failure(run_dir: str | Path) -> str | None:
    """The message in the ``failed`` marker, or None if there is none."""
    path = Path(run_dir) / FAILED
    return path.read_text().split("\n", 1)[-1].strip() if path.exists() else None
