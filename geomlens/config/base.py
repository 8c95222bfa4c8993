"""`Config`: the base of every command's dataclass config, and `choices` field metadata.

    @dataclass(kw_only=True)
    class AnalyzeConfig(Config):
        scores: list[str] = field(default_factory=..., metadata=choices("geomlens.geometry.scores:SCORES"))
        \"\"\"Scores to rank the vocabulary by.\"\"\"

        def validate(self) -> None:      # checks beyond types and choices
            ...

``__post_init__`` only validates: registry choices first (unknown names give the closest valid
one), then the class's own `validate`. None always means "unset".
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Iterable
from typing import Any

from geomlens.errors import InputError
from geomlens.registry import Registry, closest

ChoiceSource = Any
"""A `Registry`, a tuple of names, or "module:ATTRIBUTE" naming either (imported lazily)."""


def choices(source: ChoiceSource, *, none_token: str | None = None) -> dict[str, Any]:
    """Field metadata: the field's value (or each item of a list) must be a name from ``source``.

    Args:
        source: A `Registry`, a tuple of names, or ``"module:ATTR"`` for one (lazy import).
        none_token: A CLI word that stands for None in this field (e.g. "full" for NDCG@full).
    """
    return {"choices": source, "none_token": none_token}


def _resolve(source: ChoiceSource) -> Registry | tuple[str, ...]:
    if isinstance(source, str):
        module, attr = source.split(":")
        source = getattr(importlib.import_module(module), attr)
    return source if isinstance(source, Registry) else tuple(source)


def resolve_choices(source: ChoiceSource) -> tuple[str, ...]:
    """The names a choice source allows."""
    source = _resolve(source)
    return source.names() if isinstance(source, Registry) else source


def describe_choices(source: ChoiceSource) -> dict[str, str]:
    """name -> description (empty descriptions for a plain tuple)."""
    source = _resolve(source)
    if isinstance(source, Registry):
        return source.descriptions()
    return {name: "" for name in source}


def _values(value: Any) -> Iterable[Any]:
    return value if isinstance(value, (list, tuple)) else [value]


def check_choices(config: Any) -> None:
    """Raise `InputError` if a field with `choices` metadata holds a name its source lacks."""
    for f in dataclasses.fields(config):
        source = f.metadata.get("choices")
        value = getattr(config, f.name)
        if source is None or value is None:
            continue
        allowed, flag = resolve_choices(source), "--" + f.name.replace("_", "-")
        resolved = _resolve(source)
        what = resolved.kind if isinstance(resolved, Registry) else "value"
        if isinstance(value, (list, tuple)) and not value:
            raise InputError(f"{flag} must not be empty; choose from {', '.join(allowed)}")
        for item in _values(value):
            if item is not None and item not in allowed:
                raise InputError(
                    f"{flag}: unknown {what} {item!r}.{closest(str(item), allowed)} "
                    f"Choose from {', '.join(allowed)}"
                )


#: the largest integer a config holds (torch, numpy and every size fit in a signed 64-bit int)
MAX_INT = 2**63 - 1


def _number_error(flag: str, value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{flag} is {value}; give a finite number"
    if isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
        return f"{flag} {value} is too large; give an integer below 2**63"
    if isinstance(value, (int, float)) and value < 0:
        return f"{flag} is {value}; it must not be negative"
    return None


def check_numbers(config: Any) -> None:
    """Raise `InputError` for a number no field accepts: NaN, ±Inf, an integer beyond 64 bits,
    or a negative number (fields that may be negative declare ``metadata={"signed": True}``);
    list items are checked too."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        for item in _values(value):
            message = _number_error(flag, item)
            if message and not (f.metadata.get("signed") and "negative" in message):
                raise InputError(message)


class Config:
    """Mixin for dataclass configs: numbers and choices are checked, then `validate` runs."""

    def __post_init__(self) -> None:
        check_numbers(self)
        check_choices(self)
        self.validate()

    def validate(self) -> None:
        """Checks beyond types and choices; raise `InputError` with a one-line message."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build from plain values (JSON/YAML); unknown keys and wrong types raise."""
        from geomlens.config.build import build_config

        return build_config(cls, values)
