"""Experiment kinds, registered by name so that `geomlens run CONFIG` can run any of them.

An experiment kind is a dataclass config plus a function ``run(cfg, run_dir) -> summary`` that
writes its outputs (tables, figures, checkpoints) into ``run_dir`` and returns the summary dict
(also saved as ``summary.json`` by the caller). The CLI subcommands (`geomlens analyze`,
`geomlens train`, ...) build the same config from flags and call the same function, so a YAML
experiment and a command line run identical code.

    register_experiment("train", TrainConfig, run_training)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

RunFn = Callable[[Any, Path], dict]


@dataclass(frozen=True)
class ExperimentKind:
    name: str
    config_cls: type
    run: RunFn
    resumable: bool = False
    """True if ``run`` resumes from checkpoints found in ``run_dir``."""


_REGISTRY: dict[str, ExperimentKind] = {}

#: modules that register experiment kinds when imported (lazy, to keep imports light)
_PROVIDERS = (
    "geomlens.analysis.experiment",
    "geomlens.ablation.experiment",
    "geomlens.training.experiment",
)


def register_experiment(
    name: str, config_cls: type, run: RunFn, *, resumable: bool = False
) -> None:
    """Register an experiment kind; raises on a duplicate name."""
    if name in _REGISTRY and _REGISTRY[name].run is not run:
        raise ValueError(f"Experiment kind {name!r} is already registered")
    _REGISTRY[name] = ExperimentKind(name, config_cls, run, resumable)


#: extra provider modules, comma-separated (e.g. a plugin, or a test kind in child processes)
PROVIDERS_ENV = "GEOMLENS_EXPERIMENT_PROVIDERS"


def _load_providers() -> None:
    import importlib
    import os

    extra = tuple(m.strip() for m in os.environ.get(PROVIDERS_ENV, "").split(",") if m.strip())
    for mod in (*_PROVIDERS, *extra):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def get_experiment(name: str) -> ExperimentKind:
    _load_providers()
    if name not in _REGISTRY:
        raise KeyError(f"Unknown experiment kind {name!r}. Registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def list_experiments() -> list[str]:
    _load_providers()
    return sorted(_REGISTRY)
