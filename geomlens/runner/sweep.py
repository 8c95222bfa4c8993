"""Sweep grids: the product of the swept values, one named point per combination.

Each point gets a deterministic, readable directory name built from its swept values in the
order the sweep lists them, e.g. ``head=hybrid,seed=1``; the same config always yields the same
names, so rerunning a sweep finds its earlier points. A config without a sweep has one point,
named ``default``, whose directory is ``out`` itself.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geomlens.errors import ConfigError
from geomlens.runner.spec import ExperimentSpec

SINGLE_POINT = "default"
_MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")


@dataclass(frozen=True, kw_only=True)
class SweepPoint:
    """One combination of swept values."""

    index: int
    """Position in the grid (0-based; `--index` and SLURM array ids use it)."""
    name: str
    """Directory-safe name, e.g. ``head=hybrid,seed=1`` (``default`` without a sweep)."""
    values: dict[str, Any] = field(default_factory=dict)
    """Dotted config key -> value for this point."""


def format_value(value: Any) -> str:
    """A short readable text for a swept value (``true``, ``none``, ``1e-03``, ``a+b``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "+".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return "+".join(f"{k}-{format_value(v)}" for k, v in value.items())
    return str(value)


def point_name(values: dict[str, Any]) -> str:
    """Deterministic directory name for a point: ``key=value`` pairs joined by commas, sanitised.

    Characters outside ``[A-Za-z0-9._=,+-]`` become ``_``; names longer than 120 characters are
    cut and suffixed with a short hash of the full values so that they stay unique.
    """
    if not values:
        return SINGLE_POINT
    text = ",".join(f"{key}={format_value(value)}" for key, value in values.items())
    name = _UNSAFE.sub("_", text).strip("._") or "point"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
        name = f"{name[: _MAX_NAME - 9]}~{digest[:8]}"
    return name


def expand_sweep(sweep: dict[str, list[Any]]) -> list[SweepPoint]:
    """The grid of a sweep: the product of its lists, the first key varying slowest."""
    keys = list(sweep)
    points = []
    for index, combo in enumerate(itertools.product(*(sweep[k] for k in keys))):
        values = dict(zip(keys, combo))
        points.append(SweepPoint(index=index, name=point_name(values), values=values))
    seen: dict[str, SweepPoint] = {}
    for point in points:
        if point.name in seen:
            raise ConfigError(
                f"Sweep points {seen[point.name].values} and {point.values} get the same "
                f"directory name {point.name!r}; make the swept values distinct."
            )
        seen[point.name] = point
    return points


def point_dir(spec: ExperimentSpec, point: SweepPoint) -> Path:
    """Where a point runs: ``out/<name>``, or ``out`` itself for a config without a sweep."""
    return Path(spec.out) if not spec.sweep else Path(spec.out) / point.name


def point_config(spec: ExperimentSpec, point: SweepPoint) -> tuple[dict[str, Any], ExperimentSpec]:
    """The raw config values of one point, and a spec whose sources name where each came from."""
    values = copy.deepcopy(spec.config)
    sources = dict(spec.sources)
    for key, value in point.values.items():
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = copy.deepcopy(value)
        full = f"config.{key}"
        for old in [k for k in sources if k == full or k.startswith(full + ".")]:
            del sources[old]
        sources[full] = f"{spec.source(f'sweep.{key}')} (sweep)"
    return values, ExperimentSpec(
        experiment=spec.experiment, out=spec.out, config=values, sweep=spec.sweep,
        sources=sources, path=spec.path, overrides=spec.overrides, description=spec.description,
    )
