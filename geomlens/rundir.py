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

import contextlib
import dataclasses
import errno
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from geomlens.errors import InputError

logger = logging.getLogger(__name__)

RunMode = Literal["new", "resume", "error"]
DONE, FAILED = "done", "failed"
_PACKAGES = ("geomlens", "torch", "transformer_lens", "transformers", "numpy", "pandas", "scipy", "datasets", "gguf")


class RunDirError(InputError):
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
    """Git hash and dirty flag of the checkout that holds this package (None when the package
    is installed rather than checked out: `environment` then records its version only)."""
    here = Path(__file__).resolve().parent
    none = {"git_hash": None, "git_dirty": None}
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=10)
        lines = out.stdout.split()
        if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != here.parent:
            return none  # no checkout, or a repository that merely contains an installed copy
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=10,
        )
        return {"git_hash": lines[1], "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return none


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
    versions = package_versions()
    env: dict[str, Any] = {
        **git_info(),
        "geomlens_version": versions["geomlens"],  # the only identity of an installed copy
        "packages": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),  # ranks of a torchrun launch
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        env["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    env["device"] = device
    return env


#: hidden file that claims a directory for one run (created with O_EXCL, so two processes
#: never claim the same directory); its padding is the space the ``failed`` marker reuses when
#: the disk is full (`mark_failed`)
CLAIM = ".geomlens-run"
_RESERVE = 4096
#: files a run directory may hold before its run starts (written by geomlens itself)
_OWN = frozenset({CLAIM, "run.log"})


def _entries(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def is_empty(path: Path) -> bool:
    """True if ``path`` does not exist or holds nothing but geomlens's own bookkeeping."""
    return not [name for name in _entries(path) if name not in _OWN]


def is_run_dir(path: str | Path) -> bool:
    """True if geomlens wrote ``path``: it holds a claim, its provenance or a marker."""
    path = Path(path)
    return ((path / CLAIM).exists() or (path / FAILED).is_file()
            or ((path / "config.json").is_file() and (path / "env.json").is_file()))


def check_out_path(out: str | Path, flag: str = "--out") -> Path:
    """Refuse an output path that cannot become a run directory, before anything is written:
    empty, the file-system root, an existing file, a path under a file, or an unwritable place."""
    text = str(out)
    if not text.strip():
        raise RunDirError(f"{flag} is empty; give a directory path such as runs/x")
    path = Path(text).expanduser()
    if path.resolve() == Path(path.resolve().anchor):
        raise RunDirError(f"{flag} {text} is the file-system root; give a directory below it")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{flag} {text} is an existing file, not a directory; give a new path")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RunDirError(f"{flag} {text}: {parent} is a file, so nothing can be created under "
                          "it; give a path under a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(f"{flag} {text}: {parent} is not writable (read-only file system or "
                          "no permission); give a writable place")
    return path


def _claim(path: Path) -> bool:
    """Atomically claim ``path`` for this process: True if it is now ours, False if it is
    taken (by another run, another process, or files geomlens did not write)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path)
        except FileExistsError:
            if not path.is_dir():
                raise RunDirError(f"{path} is an existing file, not a directory") from None
            if not is_empty(path):
                return False
        try:
            fd = os.open(path / CLAIM, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            stamp = json.dumps({"pid": os.getpid(), "host": platform.node(), "at": _now()})
            f.write(stamp.ljust(_RESERVE - 1) + "\n")  # real bytes: space kept for `failed`
    except RunDirError:
        raise
    except OSError as exc:
        raise RunDirError(f"cannot create the run directory {path}: {os_message(exc)}") from None
    return True


def _fresh(path: Path) -> Path:
    """``path`` if it can be claimed, else the first ``path-2``, ``path-3``... that can."""
    if _claim(path):
        return path
    i = 2
    while not _claim(path.with_name(f"{path.name}-{i}")):
        i += 1
    new = path.with_name(f"{path.name}-{i}")
    logger.warning("%s already holds a run; writing this run to %s instead.", path, new)
    return new


def _reopen(path: Path, cfg: Any, mode: RunMode) -> None:
    """Check that an existing directory may be used as ``path`` itself (resume / error)."""
    if mode == "error":
        raise RunDirError(f"{path} already holds a run; choose another --out or pass --resume.")
    if not is_run_dir(path):
        names = ", ".join(n for n in _entries(path) if n not in _OWN)[:200]
        raise RunDirError(f"{path} holds files geomlens did not write ({names}); nothing was "
                          "changed. Choose another --out (or move those files away).")
    stored = path / "config.json"
    if stored.exists():
        try:
            same = json.loads(stored.read_text()) == cfg
        except (OSError, ValueError) as exc:
            raise RunDirError(f"Cannot resume {path}: its config.json is unreadable ({exc}). "
                              "Use a new --out directory.") from None
        if not same:
            raise RunDirError(f"Cannot resume {path}: its config.json differs from the requested "
                              "config. Use a new --out directory.")


def create_run_dir(
    out: str | Path,
    *,
    config: Any,
    seed: int | None,
    device: str | None = None,
    mode: RunMode = "new",
) -> Path:
    """Create (or, with ``mode="resume"``, reopen) a run directory and write its provenance.

    A new directory is claimed atomically (`os.mkdir`, or an ``O_EXCL`` claim file in an
    empty existing directory), so two processes never get the same one. A directory holding
    files geomlens did not write is never used.

    Args:
        out: Requested directory.
        config: The resolved config (dataclass or dict); stored as ``config.json``.
        seed: The run's seed, stored in ``env.json``.
        device: The device the run uses.
        mode: ``"new"`` never touches an existing non-empty dir: it uses ``out-2``, ``out-3``...
            ``"resume"`` reuses ``out`` if geomlens wrote it and its ``config.json`` equals
            ``config`` (else raises). ``"error"`` raises if ``out`` exists and is not empty.

    Returns:
        The directory actually used.
    """
    path = check_out_path(out)
    cfg = to_jsonable(config)
    if mode == "new":
        path = _fresh(path)
    elif not _claim(path):
        if is_empty(path) and mode == "error":  # claimed a moment ago by another process
            raise RunDirError(f"{path} was just claimed by another process; choose another --out.")
        _reopen(path, cfg, mode)
    try:
        _write_provenance(path, cfg, seed, device, mode)
    except OSError as exc:
        raise RunDirError(f"cannot write to the run directory {path}: {os_message(exc)}") from None
    return path


def _write_provenance(path: Path, cfg: Any, seed: int | None, device: str | None,
                      mode: RunMode) -> None:
    atomic_write(path / "config.json", json.dumps(cfg, indent=2, sort_keys=True))
    env = environment(device)
    env["seed"] = seed
    env_path = path / "env.json"
    if env_path.exists() and mode == "resume":
        try:
            prior = json.loads(env_path.read_text())
        except ValueError:
            prior = {}
        env["resumed_from"] = prior.get("started_at")
        keys = ("started_at", "git_hash", "torch_threads")
        env["history"] = prior.get("history", []) + [{k: prior.get(k) for k in keys}]
        if prior.get("torch_threads") not in (None, env.get("torch_threads")):
            logger.warning("%s was started with %s torch threads and resumes with %s: a run "
                           "resumes bit-exactly only at the same thread count (float32 "
                           "reductions on the CPU depend on it).", path,
                           prior["torch_threads"], env.get("torch_threads"))
    atomic_write(env_path, json.dumps(to_jsonable(env), indent=2))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def os_message(exc: OSError) -> str:
    """One line for an OSError, with what to do for the common causes."""
    hints = {errno.ENOSPC: "the disk is full; free space or choose another --out",
             errno.EDQUOT: "the disk quota is exceeded; free space or choose another --out",
             errno.EROFS: "read-only file system; choose a writable --out",
             errno.EACCES: "permission denied; choose a writable --out"}
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}: " + hints.get(exc.errno, "check the path")


def atomic_write(path: str | Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to a unique temporary file next to ``path``, then rename it
    over ``path``: readers see the old file or the new one, never half of one, and two writers
    never share a temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as pretty JSON (dataclasses/tensors converted), atomically."""
    atomic_write(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True))


def mark_done(run_dir: str | Path) -> None:
    """Write the ``done`` marker (sweeps skip runs that have it)."""
    atomic_write(Path(run_dir) / DONE, _now() + "\n")
    (Path(run_dir) / CLAIM).unlink(missing_ok=True)


def is_done(run_dir: str | Path) -> bool:
    return (Path(run_dir) / DONE).exists()


def failure_message(error: BaseException) -> str:
    """The one-line message a ``failed`` marker holds for ``error``."""
    if isinstance(error, KeyboardInterrupt):  # Ctrl-C, or a stop signal raised as one
        text = str(error)
        return text if text.startswith("interrupted") else "interrupted (Ctrl-C / SIGINT)"
    if isinstance(error, OSError) and error.errno is not None:
        return f"{type(error).__name__}: {os_message(error)}"
    text = " ".join(str(error).split()) or type(error).__name__
    return text if text.startswith("interrupted") else f"{type(error).__name__}: {text}"


def mark_failed(run_dir: str | Path, error: BaseException) -> None:
    """Write the ``failed`` marker: when, and the error's one-line message. On a full disk the
    marker reuses the space reserved when the directory was claimed."""
    run_dir = Path(run_dir)
    text = f"{_now()}\n{failure_message(error)[:_RESERVE - 64]}\n"
    try:
        atomic_write(run_dir / FAILED, text)
    except OSError:
        claim = run_dir / CLAIM
        if not claim.exists():
            raise
        with open(claim, "r+") as f:  # rewrites bytes already on disk: needs no free space
            f.write(text)
            f.truncate(len(text.encode()))
        os.replace(claim, run_dir / FAILED)


def clear_failed(run_dir: str | Path) -> None:
    """Remove a ``failed`` marker left by an earlier attempt (a resumed run starts over)."""
    (Path(run_dir) / FAILED).unlink(missing_ok=True)


def failure(run_dir: str | Path) -> str | None:
    """The message in the ``failed`` marker, or None if there is none."""
    path = Path(run_dir) / FAILED
    try:
        return path.read_text().split("\n", 1)[-1].strip() if path.exists() else None
    except (OSError, UnicodeDecodeError):
        return "(unreadable failed marker)"
