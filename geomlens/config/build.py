"""`build_config(cls, values)`: plain values (CLI flags, YAML, a dict) -> a validated dataclass.

Keys are checked (an unknown key is an error naming the closest valid one), values are checked
against the field annotations (int -> float widened, YAML's "1e-3" strings read as floats,
nested dataclasses built from mappings), then the dataclass validates itself. Errors are
`ConfigError`s that name the dotted key and where it came from (a YAML file, "command line").
"""

from __future__ import annotations

import dataclasses
import logging
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable

from geomlens.errors import ConfigError, InputError
from geomlens.registry import closest

logger = logging.getLogger(__name__)

SourceOf = Callable[[str], str]
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.IGNORECASE)


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


class _Mismatch(Exception):
    """Internal: a value does not fit an annotation (turned into a ConfigError by `coerce`)."""

    def __init__(self, expected: str | None = None) -> None:
        super().__init__(expected)
        self.expected = expected


def _coerce_union(value: Any, args: tuple, key: str, source_of: SourceOf) -> Any:
    if value is None and type(None) in args:
        return None
    for arg in (a for a in args if a is not type(None)):
        try:
            return coerce(value, arg, key, source_of)
        except ConfigError:
            continue
    raise _Mismatch(" or ".join(type_name(a) for a in args))


def _coerce_sequence(value: Any, tp: Any, key: str, source_of: SourceOf) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise _Mismatch()
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise _Mismatch(f"{len(args)} items")
        return tuple(coerce(v, a, f"{key}[{i}]", source_of) for i, (v, a) in enumerate(zip(value, args)))
    item = args[0] if args else Any
    items = [coerce(v, item, f"{key}[{i}]", source_of) for i, v in enumerate(value)]
    return tuple(items) if (origin is tuple or tp is tuple) else items


def _coerce_scalar(value: Any, tp: Any) -> Any:
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and is_num and isinstance(value, int):
        return value
    if tp is float and is_num:
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 as a string
    if tp is Path and isinstance(value, (str, Path)):
        return Path(value)
    if tp is type(None) and value is None:
        return None
    if tp not in (bool, int, float, Path, type(None)) and isinstance(value, tp):
        return value
    raise _Mismatch("null" if tp is type(None) else None)


def coerce(value: Any, tp: Any, key: str, source_of: SourceOf) -> Any:
    """Check ``value`` against annotation ``tp``; return it (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    try:
        if tp is Any or tp is object:
            return value
        if origin is typing.Union or origin is types.UnionType:
            return _coerce_union(value, typing.get_args(tp), key, source_of)
        if origin is typing.Literal:
            if any(value == a and type(value) is type(a) for a in typing.get_args(tp)):
                return value
            raise _Mismatch("one of " + ", ".join(repr(a) for a in typing.get_args(tp)))
        if origin in (list, tuple) or tp in (list, tuple):
            return _coerce_sequence(value, tp, key, source_of)
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                raise _Mismatch()
            return value
        if dataclasses.is_dataclass(tp):
            if isinstance(value, tp):
                return value
            if not isinstance(value, dict):
                raise _Mismatch(f"a mapping for {tp.__name__}")
            return _build(tp, value, key, source_of)
        if isinstance(tp, type):
            return _coerce_scalar(value, tp)
        return value  # an annotation we do not understand: accept
    except _Mismatch as exc:
        raise ConfigError(
            f"{source_of(key)}: key {key!r} expects {exc.expected or type_name(tp)}, "
            f"got {type(value).__name__} {value!r}."
        ) from None


def type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: skip type checks for this class
        logger.debug("Cannot resolve type hints of %s; skipping type checks.", cls.__name__)
        return {}


def _check_keys(cls: type, values: dict, fields: dict, prefix: str, source_of: SourceOf) -> None:
    for key in values:
        if key not in fields:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(
                f"{source_of(full)}: unknown key {full!r} for {cls.__name__}."
                f"{closest(str(key), sorted(fields))} Known keys: {', '.join(sorted(fields))}."
            )
    missing = [name for name, f in fields.items() if name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        names = ", ".join(repr(f"{prefix}.{m}" if prefix else m) for m in missing)
        raise ConfigError(f"{source_of(prefix)}: missing required key(s) {names} for {cls.__name__}.")


def _build(cls: type, values: dict, prefix: str, source_of: SourceOf) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    _check_keys(cls, values, fields, prefix, source_of)
    hints = type_hints(cls)
    kwargs = {key: coerce(value, hints.get(key, Any), f"{prefix}.{key}" if prefix else key, source_of)
              for key, value in values.items()}
    try:
        return cls(**kwargs)
    except InputError as exc:
        raise ConfigError(f"{source_of(prefix)}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source_of(prefix)}: invalid {cls.__name__}: {exc}") from exc


def build_config(
    cls: type, values: dict, *, source_of: SourceOf | None = None, prefix: str = ""
) -> Any:
    """Validate raw ``values`` into the dataclass ``cls``: the one path for CLI, YAML and Python.

    Args:
        cls: A dataclass config class.
        values: Field values; absent fields keep their defaults.
        source_of: dotted key -> where it came from ("runs.yaml", "command line").
        prefix: Dotted prefix of the keys in messages (``"config"`` for YAML files).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    return _build(cls, dict(values), prefix, source_of or (lambda key: "config"))
