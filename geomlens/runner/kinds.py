"""Run kinds, registered by name: what `geomlens <command>` and `geomlens run CONFIG` execute.

A run kind is a dataclass config, a function ``run(cfg, run_dir) -> summary`` that writes its
outputs (tables, figures, checkpoints) into ``run_dir`` and returns the summary dict (saved as
``summary.json`` by `geomlens.runner.lifecycle.execute`), and an optional ``validate(cfg)``
that checks the inputs (model name, layers, files, lengths) before a run directory exists::

    register_run_kind("train", TrainConfig, run_training, validate=validate_training,
                      resumable=True, help="train a micro-LLaMA with a chosen LM head")

The command of the same name gets its flags from the config (`geomlens.config.flags`), so a
YAML point and a command line run the same code through the same lifecycle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from geomlens.registry import Registry

RunFn = Callable[[Any, Path], dict]
ValidateFn = Callable[[Any], None]


@dataclass(frozen=True)
class RunKind:
    name: str
    """The kind's name (``experiment:`` in YAML files, the command name on the CLI)."""
    config_cls: type
    """Its dataclass config."""
    run: RunFn
    """``run(cfg, run_dir) -> summary``."""
    validate: ValidateFn | None = None
    """Checks the config's inputs before a run directory is created (raise `InputError`)."""
    resumable: bool = False
    """True if ``run`` resumes from checkpoints found in ``run_dir``."""


#: modules that register run kinds when imported (lazy, to keep imports light)
PROVIDERS: tuple[str, ...] = (
    "geomlens.analysis.experiment",
    "geomlens.ablation.experiment",
    "geomlens.training.experiment",
    "geomlens.projection.experiment",
    "geomlens.kv.experiment",
)
#: extra provider modules, comma-separated (a plugin, or a test kind in `--jobs` child processes)
PROVIDERS_ENV = "GEOMLENS_EXPERIMENT_PROVIDERS"


def _providers() -> tuple[str, ...]:
    extra = [m.strip() for m in os.environ.get(PROVIDERS_ENV, "").split(",") if m.strip()]
    return (*PROVIDERS, *extra)


class _KindRegistry(Registry[RunKind]):
    def _load(self) -> None:  # providers can be added through the environment at any time
        self.providers = _providers()
        if not set(self.providers) <= getattr(self, "_imported", set()):
            self._loaded = False
            self._imported = set(self.providers)
        super()._load()


RUN_KINDS: Registry[RunKind] = _KindRegistry("run kind", providers=PROVIDERS)


def register_run_kind(
    name: str, config_cls: type, run: RunFn, *, help: str,
    validate: ValidateFn | None = None, resumable: bool = False,
) -> RunKind:
    """Register a run kind (see the module docstring); a different second one raises."""
    existing = RUN_KINDS._items.get(name)
    if existing is not None and existing.run is run:
        return existing  # re-import of the same module
    return RUN_KINDS.register(name, RunKind(name, config_cls, run, validate, resumable), help=help)


def get_run_kind(name: str) -> RunKind:
    """The run kind ``name``; unknown names raise `InputError` naming the closest one."""
    return RUN_KINDS.get(name)
