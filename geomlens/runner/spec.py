"""Experiment YAML files: hierarchical defaults, command-line overrides, typed validation.

A config file looks like::

    # experiments/configs/<name>.yaml
    defaults: [base]          # parent files in the same folder, deep-merged first, in order
    experiment: train         # a registered command (see geomlens/runner/command.py)
    out: runs/<name>          # root directory; each sweep point gets its own sub-directory
    config:                   # fields of the kind's dataclass config (nested maps for nested dataclasses)
      model: micro-1m
    sweep:                    # optional grid: config keys -> lists of values
      seed: [0, 1, 2]

Overrides from the command line (``model.name=gemma3-270m head=hybrid seed=1``) are dotted keys;
a key whose first part is not a top-level key (``experiment``, ``out``, ``config``, ``sweep``,
``description``, ``defaults``) means ``config.<key>``. Values are parsed as YAML scalars or
lists (``yaml.safe_load``; nothing is ever ``eval``-ed). Overriding a swept key pins it (the key
leaves the sweep).

Every leaf value remembers the file it came from, so an unknown key or a wrong type is reported
with that file (or "command line").
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geomlens.errors import ConfigError

logger = logging.getLogger(__name__)

TOP_LEVEL_KEYS = ("defaults", "description", "experiment", "out", "config", "sweep")
COMMAND_LINE = "command line"


@dataclass(kw_only=True)
class ExperimentSpec:
    """A loaded experiment file after defaults and overrides, before sweep expansion."""

    experiment: str
    """Name of the registered experiment kind."""
    out: str
    """Root output directory (sweep points go in sub-directories)."""
    config: dict[str, Any]
    """Merged raw values for the kind's dataclass config (nested dicts for nested dataclasses)."""
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    """Dotted config key -> list of values; the grid is their product (in this order)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Full dotted key (``config.lr``, ``sweep.seed``, ``out``) -> the file it came from."""
    path: Path | None = None
    """The YAML file this spec was loaded from (None when built in code)."""
    overrides: list[str] = field(default_factory=list)
    """The command-line overrides applied, verbatim (re-passed to ``--jobs`` subprocesses)."""
    description: str | None = None
    """Free text from the file."""

    def source(self, key: str) -> str:
        """The file that set ``key`` (or its closest parent key)."""
        parts = re.sub(r"\[\d+\]", "", key).split(".")
        for i in range(len(parts), 0, -1):
            src = self.sources.get(".".join(parts[:i]))
            if src is not None:
                return src
        return str(self.path) if self.path else "<unknown>"


# --------------------------------------------------------------------------- loading + merging


def _record_sources(tree: Any, prefix: str, src: str, sources: dict[str, str]) -> None:
    sources[prefix] = src
    if isinstance(tree, dict):
        for key, value in tree.items():
            _record_sources(value, f"{prefix}.{key}", src, sources)


def _deep_merge(base: dict, top: dict, prefix: str, src: str, sources: dict[str, str]) -> dict:
    """Merge ``top`` into a copy of ``base``: maps merge recursively, anything else replaces."""
    out = dict(base)
    for key, value in top.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            sources[full] = src
            out[key] = _deep_merge(out[key], value, full, src, sources)
        else:
            for old in [k for k in sources if k == full or k.startswith(full + ".")]:
                del sources[old]
            _record_sources(value, full, src, sources)
            out[key] = copy.deepcopy(value)
    return out


def _resolve_default(name: str, folder: Path, src: Path) -> Path:
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = path.with_name(path.name + ".yaml")
    path = path if path.is_absolute() else folder / path
    if not path.exists():
        raise ConfigError(f"{src}: defaults entry {name!r} not found (looked for {path}).")
    return path


def load_yaml_tree(path: str | Path, *, _stack: tuple[Path, ...] = ()) -> tuple[dict, dict[str, str]]:
    """Read one YAML file with its ``defaults`` merged in, and the source file of every key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Config file {path} does not exist.")
    if path.resolve() in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path.resolve()))
        raise ConfigError(f"{path}: circular defaults: {chain}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read as UTF-8 text ({exc}).") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}.")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"{path}: unknown top-level key {key!r}; allowed: {', '.join(TOP_LEVEL_KEYS)}."
            )
    for key in ("config", "sweep"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], dict):
            raise ConfigError(f"{path}: {key!r} must be a mapping, got {type(raw[key]).__name__}.")
    defaults = raw.pop("defaults", None) or []
    if isinstance(defaults, str):
        defaults = [defaults]
    merged: dict = {}
    sources: dict[str, str] = {}
    for name in defaults:
        parent = _resolve_default(str(name), path.parent, path)
        tree, parent_sources = load_yaml_tree(parent, _stack=(*_stack, path.resolve()))
        merged = _deep_merge(merged, tree, "", str(parent), sources)
        sources.update(parent_sources)
    raw = {k: ({} if v is None and k in ("config", "sweep") else v) for k, v in raw.items()}
    merged = _deep_merge(merged, raw, "", str(path), sources)
    return merged, sources


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``"model.name=gemma3-270m"`` -> ``("model.name", "gemma3-270m")`` (value via safe YAML)."""
    if "=" not in text:
        raise ConfigError(f"Bad override {text!r} on the command line: expected KEY=VALUE.")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"Bad override {text!r} on the command line: empty key.")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"Bad override {text!r} on the command line: {exc}") from exc


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def apply_overrides(tree: dict, sources: dict[str, str], overrides: list[str]) -> dict:
    """Apply ``KEY=VALUE`` overrides to a merged tree (bare keys mean ``config.KEY``)."""
    tree = copy.deepcopy(tree)
    for text in overrides:
        key, value = parse_override(text)
        if key.split(".")[0] not in TOP_LEVEL_KEYS:
            key = f"config.{key}"
        if key == "defaults":
            raise ConfigError("'defaults' cannot be overridden on the command line.")
        if key.startswith("config."):
            swept = key[len("config."):]
            if swept in (tree.get("sweep") or {}):
                logger.info("Override %s pins swept key %r (removed from the sweep).", text, swept)
                del tree["sweep"][swept]
                sources.pop(f"sweep.{swept}", None)
        for old in [k for k in sources if k == key or k.startswith(key + ".")]:
            del sources[old]
        _set_dotted(tree, key, value)
        _record_sources(value, key, COMMAND_LINE, sources)
    return tree


#: the experiment configs shipped with the package (a link to experiments/configs in a checkout)
PACKAGED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def resolve_config(path: str | Path) -> Path:
    """A config file path, or the name of a shipped config (``table61_smollm2``, with or
    without ``.yaml``) when no such file exists here."""
    path = Path(path)
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"Config {path} is not a file; give an experiment YAML file.")
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    shipped = PACKAGED_CONFIGS / name
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml")))
    raise ConfigError(f"Config file {path} does not exist, and no shipped config is named "
                      f"{path.stem!r}. Shipped configs: {names or 'none'}.")


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentSpec:
    """Load a config file (or a shipped config by name), merge its defaults, apply overrides;
    check the top-level fields."""
    path = resolve_config(path)
    overrides = list(overrides or [])
    tree, sources = load_yaml_tree(path)
    tree = apply_overrides(tree, sources, overrides)
    experiment = tree.get("experiment")
    if not isinstance(experiment, str) or not experiment:
        raise ConfigError(f"{path}: missing 'experiment: <kind>' (e.g. analyze, ablate, train).")
    out = tree.get("out")
    if not isinstance(out, str) or not out:
        raise ConfigError(f"{sources.get('out', path)}: 'out' must be a directory path string.")
    if not isinstance(tree.get("sweep") or {}, dict):
        raise ConfigError(
            f"{sources.get('sweep', path)}: 'sweep' must be a mapping of config keys to lists "
            "(for a config field named 'sweep', write config.sweep=...)."
        )
    sweep = {}
    for key, values in (tree.get("sweep") or {}).items():
        src = sources.get(f"sweep.{key}", str(path))
        if values is None:  # `key: null` in a child file drops a parent's sweep
            continue
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{src}: sweep.{key} must be a non-empty list, got {values!r}.")
        sweep[str(key)] = values
    description = tree.get("description")
    return ExperimentSpec(
        experiment=experiment, out=out, config=tree.get("config") or {}, sweep=sweep,
        sources=sources, path=path, overrides=overrides,
        description=description if isinstance(description, str) else None,
    )
