"""Run every point of an experiment spec: skip finished ones, resume unfinished ones, run jobs.

    spec = load_experiment("experiments/configs/x.yaml", ["seed=1"])
    results = Runner(spec).run(jobs=1)

Each point's directory gets config.json + env.json (`create_run_dir`), the command's outputs,
summary.json and the ``done`` marker. A point is

* ``done``     its ``done`` marker exists: skipped;
* ``partial``  the directory holds something but no marker: resumed in the same directory
               (a resumable command finds its checkpoints there; another command reruns from scratch);
* ``new``      nothing there yet (or only geomlens's own claim and ``run.log``);
* ``conflict`` its stored config.json differs from the requested config: the run refuses to
               start (nothing is overwritten) and names the differing keys.

With ``jobs > 1`` every point runs in its own process (``python -m geomlens run CONFIG
OVERRIDES --point NAME``, the same line a SLURM array task would use), at most ``jobs`` at a
time. Points that use a GPU (config ``device`` starting with ``cuda``, or ``device: null`` on a
machine with CUDA) each get one GPU through ``CUDA_VISIBLE_DEVICES``, assigned to free GPUs in
turn, so at most one GPU run per GPU; CPU points get ``CUDA_VISIBLE_DEVICES=""`` and
``OMP_NUM_THREADS = cpus // jobs`` unless already set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Protocol, runtime_checkable

from geomlens.config.build import build_config
from geomlens.errors import ConfigError, GeomlensError
from geomlens.rundir import failure, failure_message, is_done, is_empty, to_jsonable
from geomlens.runner.command import Command, get_command
from geomlens.runner.lifecycle import execute, validate_inputs
from geomlens.runner.locks import RunBusyError, run_lock
from geomlens.runner.spec import ExperimentSpec
from geomlens.runner.sweep import (
    SINGLE_POINT,
    SweepPoint,
    expand_sweep,
    point_config,
    point_dir,
)

logger = logging.getLogger(__name__)

PointStatus = Literal["done", "partial", "new", "conflict"]
LOG_NAME = "run.log"


class ConfigMismatchError(GeomlensError):
    """A point's directory holds a run made with a different config."""


@dataclass(kw_only=True)
class PlannedRun:
    """One sweep point, validated, with its directory and status."""

    point: SweepPoint
    """The swept values and the point's name."""
    config: Any
    """The kind's dataclass config for this point."""
    run_dir: Path
    """Where the point runs."""
    status: PointStatus
    """done / partial / new / conflict (see the module docstring)."""
    differences: list[str]
    """Dotted keys whose stored value differs from the requested one (``conflict`` only)."""

    @property
    def config_json(self) -> dict:
        return to_jsonable(self.config)


@dataclass(kw_only=True)
class PointResult:
    """What happened to one point."""

    name: str
    """The point's name."""
    run_dir: Path
    """Its directory."""
    status: Literal["skipped", "ran", "failed"]
    """skipped (already done), ran (finished now) or failed."""
    error: str | None = None
    """The error message when it failed."""


@runtime_checkable
class Process(Protocol):
    """A started child process (``subprocess.Popen`` or a test double)."""

    def poll(self) -> int | None: ...


Launcher = Callable[[PlannedRun, dict[str, str]], Process]


def config_differences(stored: Any, requested: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON-like configs differ."""
    if isinstance(stored, dict) and isinstance(requested, dict):
        out = []
        for key in sorted(set(stored) | set(requested), key=str):
            full = f"{prefix}.{key}" if prefix else str(key)
            if key not in stored or key not in requested:
                out.append(full)
            else:
                out.extend(config_differences(stored[key], requested[key], full))
        return out
    return [] if stored == requested else [prefix or "<root>"]


def point_status(run_dir: Path, config_json: dict) -> tuple[PointStatus, list[str]]:
    """The status of a point directory against the config it should hold."""
    stored_path = run_dir / "config.json"
    if stored_path.exists():
        try:
            diffs = config_differences(json.loads(stored_path.read_text()), config_json)
        except (OSError, ValueError):
            diffs = ["<unreadable config.json>"]
        if diffs:
            return "conflict", diffs
    if is_done(run_dir):
        return "done", []
    return ("new", []) if is_empty(run_dir) else ("partial", [])


def get_spec_command(spec: ExperimentSpec) -> Command:
    try:
        return get_command(spec.experiment)
    except GeomlensError as exc:
        raise ConfigError(f"{spec.source('experiment')}: {exc}") from None


def plan(spec: ExperimentSpec) -> list[PlannedRun]:
    """Expand the sweep, validate every point's config, and find each point's status."""
    kind = get_spec_command(spec)
    points = expand_sweep(spec.sweep) if spec.sweep else [SweepPoint(index=0, name=SINGLE_POINT)]
    planned = []
    for point in points:
        values, point_spec = point_config(spec, point)
        config = build_config(kind.config_cls, values, source_of=point_spec.source, prefix="config")
        run_dir = point_dir(spec, point)
        status, diffs = point_status(run_dir, to_jsonable(config))
        planned.append(
            PlannedRun(point=point, config=config, run_dir=run_dir, status=status, differences=diffs)
        )
    return planned


def select(planned: list[PlannedRun], *, name: str | None = None, index: int | None = None) -> list[PlannedRun]:
    """Keep one point, by name (``--point``) or grid index (``--index``); all if neither."""
    if name is not None:
        chosen = [p for p in planned if p.point.name == name]
        if not chosen:
            names = ", ".join(p.point.name for p in planned)
            raise ConfigError(f"No sweep point named {name!r}. Points: {names}")
        return chosen
    if index is not None:
        if not 0 <= index < len(planned):
            raise ConfigError(f"--index {index} is out of range: the sweep has {len(planned)} points.")
        return [planned[index]]
    return planned


def check_conflicts(planned: list[PlannedRun]) -> None:
    """Refuse to run if any point's directory holds a run with another config."""
    bad = [p for p in planned if p.status == "conflict"]
    if bad:
        lines = [f"  {p.run_dir}: differs in {', '.join(p.differences)}" for p in bad]
        raise ConfigMismatchError(
            "These run directories already hold runs made with a different config:\n"
            + "\n".join(lines)
            + "\nNothing was run. Use another `out=...`, or delete those directories to redo them."
        )


def uses_gpu(config: Any, n_gpus: int) -> bool:
    """True if a point's config will run on CUDA (``device: cuda...``, or unset with a GPU)."""
    device = getattr(config, "device", None)
    if device is None:
        return n_gpus > 0
    return str(device).startswith("cuda")


def visible_gpus() -> list[str]:
    """GPU ids this process may hand out (respects an outer ``CUDA_VISIBLE_DEVICES``)."""
    outer = os.environ.get("CUDA_VISIBLE_DEVICES")
    if outer is not None:
        return [g.strip() for g in outer.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover
        return []


class Runner:
    """Runs the points of one experiment spec (see the module docstring)."""

    def __init__(
        self,
        spec: ExperimentSpec,
        *,
        gpus: list[str] | None = None,
        launcher: Launcher | None = None,
        poll_interval: float = 0.2,
    ) -> None:
        """
        Args:
            spec: The loaded experiment.
            gpus: GPU ids to hand out to parallel jobs (default: the visible CUDA devices).
            launcher: Starts one point in a child process (default: ``python -m geomlens run``).
            poll_interval: Seconds between checks on running child processes.
        """
        self.spec = spec
        self.kind = get_spec_command(spec)
        self.gpus = visible_gpus() if gpus is None else list(gpus)
        self.launcher = launcher or self._subprocess_launcher
        self.poll_interval = poll_interval

    def plan(self) -> list[PlannedRun]:
        return plan(self.spec)

    def run(self, *, jobs: int = 1, point: str | None = None, index: int | None = None) -> list[PointResult]:
        """Run the selected points (all by default); returns one result per point. Every
        point's inputs are checked before any point runs."""
        if jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {jobs}.")
        planned = select(self.plan(), name=point, index=index)
        check_conflicts(planned)
        self.validate(planned)
        if jobs == 1 or len([p for p in planned if p.status != "done"]) <= 1:
            return self._run_serial(planned)
        return self._run_parallel(planned, jobs)

    def validate(self, planned: list[PlannedRun]) -> None:
        """The lifecycle's input checks for every point still to run (a bad point stops the
        sweep before any directory is written)."""
        for p in planned:
            if p.status == "done":
                continue
            try:
                validate_inputs(self.kind, p.config, p.run_dir)
            except GeomlensError as exc:
                raise ConfigError(f"point {p.point.name}: {exc}") from None

    def _run_serial(self, planned: list[PlannedRun]) -> list[PointResult]:
        """Points another runner holds are skipped first, then waited for (and usually found
        done): two runners on one ``out`` split the points between them."""
        results, deferred = {}, []
        for p in planned:
            result = self.run_point(p, wait=False)
            if result is None:
                logger.info("%s: another process is running it; coming back to it", p.point.name)
                deferred.append(p)
            else:
                results[p.point.name] = result
        for p in deferred:
            results[p.point.name] = self.run_point(p, wait=True)
        return [results[p.point.name] for p in planned]

    def run_point(self, planned: PlannedRun, *, wait: bool = True) -> PointResult | None:
        """Run one point in this process under its lock (skipped if done); None if another
        process holds the lock and ``wait`` is False."""
        name, run_dir = planned.point.name, planned.run_dir
        if planned.status == "done":
            logger.info("%s: done already, skipped (%s)", name, run_dir)
            return PointResult(name=name, run_dir=run_dir, status="skipped")
        try:
            with run_lock(run_dir, wait=wait):
                return self._run_locked(planned)
        except RunBusyError:
            return None

    def _run_locked(self, planned: PlannedRun) -> PointResult:
        name, run_dir = planned.point.name, planned.run_dir
        status, diffs = point_status(run_dir, planned.config_json)  # fresh, under the lock
        planned = dataclasses.replace(planned, status=status, differences=diffs)
        if status == "done":
            logger.info("%s: finished by another process, skipped (%s)", name, run_dir)
            return PointResult(name=name, run_dir=run_dir, status="skipped")
        check_conflicts([planned])
        if failure(run_dir):
            logger.info("%s: an earlier attempt failed (%s); running it again", name, failure(run_dir))
        if planned.status == "partial":
            how = "resuming from what it saved" if self.kind.resumable else "rerunning from scratch"
            logger.info("%s: unfinished run found in %s; %s", name, run_dir, how)
        else:
            logger.info("%s: running in %s", name, run_dir)
        try:  # one failed point must not stop the sweep; the lifecycle marks it `failed`
            execute(self.kind, planned.config, run_dir, mode="resume")
        except Exception as exc:
            error = failure_message(exc)
            logger.error("%s failed: %s", name, error)
            logger.debug("%s failed", name, exc_info=True)
            return PointResult(name=name, run_dir=run_dir, status="failed", error=error)
        return PointResult(name=name, run_dir=run_dir, status="ran")

    # ----------------------------------------------------------------- parallel (one process per point)

    def command(self, planned: PlannedRun) -> list[str]:
        """The command line that runs one point by itself (also usable from a SLURM array)."""
        if self.spec.path is None:
            raise ConfigError("Parallel jobs need a spec loaded from a config file.")
        return [
            sys.executable, "-m", "geomlens", "run", str(self.spec.path),
            *self.spec.overrides, "--point", planned.point.name,
        ]

    def _subprocess_launcher(self, planned: PlannedRun, env: dict[str, str]) -> subprocess.Popen:
        planned.run_dir.mkdir(parents=True, exist_ok=True)
        with open(planned.run_dir / LOG_NAME, "a") as log:
            return subprocess.Popen(
                self.command(planned), env=env, stdout=log, stderr=subprocess.STDOUT,
            )

    def child_env(self, planned: PlannedRun, gpu: str | None, jobs: int) -> dict[str, str]:
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = gpu if gpu is not None else ""
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
        return env

    def _run_parallel(self, planned: list[PlannedRun], jobs: int) -> list[PointResult]:
        results: dict[str, PointResult] = {}
        pending: list[PlannedRun] = []
        for p in planned:
            if p.status == "done":
                results[p.point.name] = self.run_point(p)
            else:
                pending.append(p)
        if not self.gpus and any(uses_gpu(p.config, 0) for p in pending):
            raise ConfigError("Some points ask for a CUDA device but no GPU is visible.")
        free_gpus = list(self.gpus)
        running: list[tuple[Process, PlannedRun, str | None]] = []
        try:
            self._schedule(pending, running, free_gpus, results, jobs)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: stop the children, which mark their points
            for proc, p, _ in running:
                logger.warning("%s: stopping (its run is marked failed)", p.point.name)
                with contextlib.suppress(OSError, AttributeError):
                    proc.terminate()
            for proc, _, _ in running:
                with contextlib.suppress(AttributeError, subprocess.TimeoutExpired):
                    proc.wait(timeout=60)
            raise
        return [results[p.point.name] for p in planned]

    def _schedule(self, pending: list[PlannedRun], running: list, free_gpus: list[str],
                  results: dict[str, PointResult], jobs: int) -> None:
        while pending or running:
            started = True
            while started and pending and len(running) < jobs:
                started = False
                for p in pending:
                    gpu_job = uses_gpu(p.config, len(self.gpus))
                    if gpu_job and not free_gpus:
                        continue
                    gpu = free_gpus.pop(0) if gpu_job else None
                    logger.info("%s: starting (gpu=%s) in %s", p.point.name, gpu, p.run_dir)
                    running.append((self.launcher(p, self.child_env(p, gpu, jobs)), p, gpu))
                    pending.remove(p)
                    started = True
                    break
            finished = [(proc, p, gpu) for proc, p, gpu in running if proc.poll() is not None]
            for item in finished:
                proc, p, gpu = item
                running.remove(item)
                if gpu is not None:
                    free_gpus.append(gpu)
                ok = proc.poll() == 0 and is_done(p.run_dir)
                results[p.point.name] = PointResult(
                    name=p.point.name, run_dir=p.run_dir, status="ran" if ok else "failed",
                    error=None if ok else f"exit code {proc.poll()}; see {p.run_dir / LOG_NAME}",
                )
                logger.info("%s: %s", p.point.name, results[p.point.name].status)
            if not finished:
                time.sleep(self.poll_interval)
