"""Commands: what `geomlens <command>` and `geomlens run CONFIG` execute.

A **run command** is a dataclass config, a function ``run(cfg, run_dir) -> summary`` that writes
its outputs (tables, figures, checkpoints) into ``run_dir`` and returns the summary dict (saved
as ``summary.json`` by `geomlens.runner.lifecycle.execute`), an optional ``validate(cfg)`` that
checks the inputs before a run directory exists, and a ``headline(summary, run_dir)`` printed at
the end. Each research thread defines its own in ``geomlens/<thread>/command.py``::

    COMMANDS = (Command("train", TrainConfig, run_training, validate=validate_training,
                        headline=headline, resumable=True, help="train a micro-LLaMA ..."),)

A **tool** (``models``, ``run``, ``report``...) parses its own flags and writes no run directory.
`geomlens.cli` lists the modules once and registers their commands here; the flags of a run
command are generated from its config (`geomlens.config.flags`), so a YAML point and a command
line run the same code through the same lifecycle.
"""

from __future__ import annotations

import argparse
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from geomlens.errors import InputError
from geomlens.registry import Registry

RunFn = Callable[[Any, Path], dict]
ValidateFn = Callable[[Any], None]
HeadlineFn = Callable[[dict, Path], str]


def _no_headline(summary: dict, run_dir: Path) -> str:
    return f"summary: {run_dir / 'summary.json'}"


@dataclass(frozen=True)
class Command:
    """A command that runs through the lifecycle and writes one run directory."""

    name: str
    """The command's name (``experiment:`` in YAML files, ``geomlens NAME`` on the CLI)."""
    config_cls: type
    """Its dataclass config (one flag per field)."""
    run: RunFn
    """``run(cfg, run_dir) -> summary``."""
    validate: ValidateFn | None = None
    """Checks the config's inputs before a run directory is created (raise `InputError`)."""
    resumable: bool = False
    """True if ``run`` resumes from what it saved in ``run_dir`` (checkpoints, batch records:
    `geomlens.runner.record_log`)."""
    keeps_records: bool = False
    """True if ``run`` keeps its batch records in ``run_dir/records``
    (`geomlens.runner.record_log`): the lifecycle deletes them once the run is done, unless
    ``--keep-records``."""
    headline: HeadlineFn = _no_headline
    """The few lines printed when the run is done."""
    help: str = ""
    """One line for ``geomlens --help``."""


@dataclass(frozen=True)
class Tool:
    """A command that parses its own flags (``add_arguments``) and runs ``run(args) -> code``."""

    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    help: str


#: every command by name; `geomlens.cli` registers the built-in ones
COMMANDS: Registry[Command | Tool] = Registry("command")
#: extra modules (comma-separated) whose ``COMMANDS`` tuple is registered too: a plugin, or a
#: test command that `--jobs` child processes must see
PLUGINS_ENV = "GEOMLENS_PLUGINS"


def register(*commands: Command | Tool) -> None:
    """Register commands (re-registering the same object is a no-op; another one raises)."""
    for cmd in commands:
        if COMMANDS._items.get(cmd.name) is not cmd:
            COMMANDS.register(cmd.name, cmd, help=cmd.help)


def load_plugins() -> None:
    """Register the ``COMMANDS`` of every module named in ``$GEOMLENS_PLUGINS``."""
    for name in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        register(*importlib.import_module(name).COMMANDS)


def get_command(name: str) -> Command:
    """The run command ``name``; unknown names raise `InputError` naming the closest one."""
    load_plugins()
    cmd = COMMANDS.get(name)
    if not isinstance(cmd, Command):
        raise InputError(f"{name!r} is a tool, not a run command; it has no config to run")
    return cmd
