"""`Registry`: the single place a family of named choices is written down.

Scores, NDCG gains, LM heads, ablation methods and components, and commands are each one
`Registry`. CLI ``choices``, config validation, ``--help`` text and the definitions written to
``summary.json`` all read it, so adding a choice is one ``register`` call in one file::

    SCORES = Registry("score")
    SCORES.register("neg_dist", spec, help="-d: minus the Euclidean distance")

A registry can name *provider* modules that register their entries when imported; they are
imported on first use, so that ``import geomlens`` and ``geomlens --help`` stay light.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from geomlens.errors import InputError

T = TypeVar("T")


def closest(name: str, candidates: list[str] | tuple[str, ...]) -> str:
    """``" Did you mean 'x'?"`` for the closest candidate, or ``""`` if none is close."""
    match = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


class Registry(Generic[T]):
    """Named entries of one kind, each with a one-line description."""

    def __init__(self, kind: str, *, providers: tuple[str, ...] = ()) -> None:
        """
        Args:
            kind: What an entry is, for messages ("score", "head", "command").
            providers: Modules that register entries when imported (loaded on first lookup).
        """
        self.kind = kind
        self.providers = providers
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._loaded = not providers

    def register(self, name: str, item: T, *, help: str) -> T:
        """Add ``item`` under ``name``; a second registration of the same name raises."""
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if not help or "\n" in help.strip():
            raise ValueError(f"{self.kind} {name!r} needs a one-line help text")
        self._items[name] = item
        self._help[name] = help.strip()
        return item

    def unregister(self, name: str) -> None:
        """Remove an entry (for tests that register a temporary one)."""
        self._items.pop(name, None)
        self._help.pop(name, None)

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self.providers:
                importlib.import_module(module)

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name raises `InputError` naming the closest one."""
        self._load()
        if name not in self._items:
            raise InputError(
                f"unknown {self.kind} {name!r}.{closest(name, self.names())} "
                f"Available: {', '.join(self.names())}"
            )
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._items)

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        self._load()
        return tuple(self._items)

    def describe(self, name: str) -> str:
        """The one-line description of ``name``."""
        self.get(name)
        return self._help[name]

    def descriptions(self) -> dict[str, str]:
        """name -> one-line description, for ``--help`` and summary.json definitions."""
        self._load()
        return dict(self._help)

    def help_text(self) -> str:
        """``"a: what a is; b: what b is"`` for argparse help."""
        return "; ".join(f"{k}: {v}" for k, v in self.descriptions().items())
