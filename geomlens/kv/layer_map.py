"""`LayerMap`: which layer's keys and values each layer attends to (thesis §5.2).

``source[l]`` is the layer whose K/V layer ``l`` uses, as in LCKV's ``layer_types`` string
(whyNLP/LCKV: the i-th number is the layer whose K/V layer i uses). A layer with
``source[l] == l`` computes and keeps its own K/V; only such layers hold a KV cache, so the
cache is ``n_layers / len(sources)`` times smaller than a standard one (eqs. 5.17–5.18).

Specs (`LayerMap.parse`), for a model with L layers:

``all``            every layer ≥ 1 takes layer 0 (first-layer-only K/V, eq. 5.16)
``none``           no sharing (a standard model)
``>=m``            layers ≥ m take layer 0 (1 ≤ m ≤ L−1)
``3,5,7``          exactly these layers take layer 0 (one number is a set of one)
``cla``            adjacent pairs share the lower layer's K/V: ``0_0_2_2_4_4…`` (CLA, k = 2)
``first_of_type``  each layer takes the first layer of its own attention type: Gemma's local
                   layers take layer 0 and its global layers the first global one (as
                   transformers' Gemma3n, which never mixes rotary bases or windows)
``lckv``           every layer takes the top layer L−1 (LCKV's direction). Its sources lie
                   *above* their consumers: a single forward pass cannot compute them (LCKV
                   trains with iterations), so `is_causal` is False and the patch and cache
                   functions refuse it; it parses so that the map can be stated and compared.
``0_0_2_2``        an explicit LCKV ``layer_types`` string with L numbers

A source must keep its own K/V (``source[source[l]] == source[l]``): chains are rejected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from geomlens.backend import view_of
from geomlens.errors import InputError

NAMED_SPECS = ("all", "none", "cla", "lckv", "first_of_type")
MODES = ("all", "prev")
"""How a consumer reads its source: "all" positions, or "prev" = positions before the query
(the query's own position keeps the consumer's K/V, eq. 5.16)."""


@dataclass(frozen=True)
class LayerMap:
    source: tuple[int, ...]
    """``source[l]``: the layer whose K/V layer ``l`` attends to."""
    spec: str = ""
    """The spec the map was parsed from (for tables and summaries)."""
    consumers: tuple[int, ...] | None = field(default=None)
    """Layers whose K/V are taken from ``source`` by the patch hooks; None = every layer with
    ``source[l] != l``. `LayerMap.own` lists every layer (each patched with its own K/V)."""

    def __post_init__(self) -> None:
        n = len(self.source)
        if n == 0:
            raise InputError("A layer map needs at least one layer.")
        bad = [s for s in self.source if not 0 <= s < n]
        if bad:
            raise InputError(f"Source layers {bad} are outside 0..{n - 1}.")
        chained = [layer for layer, s in enumerate(self.source) if self.source[s] != s]
        if chained:
            raise InputError(f"Layers {chained} take K/V from a layer that does not keep its own; "
                             "every source layer must use its own K/V.")
        if self.consumers is None:
            object.__setattr__(self, "consumers", tuple(layer for layer, s in enumerate(self.source) if s != layer))

    @property
    def n_layers(self) -> int:
        return len(self.source)

    @property
    def sources(self) -> tuple[int, ...]:
        """Layers that compute and keep K/V (the only ones a cache stores)."""
        return tuple(sorted(set(self.source)))

    @property
    def is_causal(self) -> bool:
        """Every layer's source is at or below it (computable in one forward pass)."""
        return all(s <= layer for layer, s in enumerate(self.source))

    @property
    def layer_types(self) -> str:
        """The LCKV ``layer_types`` string, e.g. ``0_0_2_2``."""
        return "_".join(map(str, self.source))

    @property
    def cache_reduction(self) -> float:
        """Standard cache size over this map's cache size: L / #sources."""
        return self.n_layers / len(self.sources)

    @classmethod
    def none(cls, n_layers: int) -> LayerMap:
        """No sharing: every layer keeps its own K/V."""
        return cls(tuple(range(n_layers)), spec="none")

    @classmethod
    def own(cls, n_layers: int) -> LayerMap:
        """Every layer patched with its own K/V: a null patch that runs all the hook code."""
        return cls(tuple(range(n_layers)), spec="own", consumers=tuple(range(n_layers)))

    @classmethod
    def only(cls, layer: int, n_layers: int, *, source: int = 0) -> LayerMap:
        """Only ``layer`` takes ``source``'s K/V (the per-layer sensitivity sweep)."""
        return cls.parse(str(layer), n_layers) if source == 0 else cls(
            tuple(source if i == layer else i for i in range(n_layers)), spec=f"{layer}<-{source}")

    @classmethod
    def for_model(cls, spec: str, model) -> LayerMap:
        """`parse` for a loaded model (either backend): its depth and its layers' attention
        types (`geomlens.backend.ModelView.attn_types`)."""
        view = view_of(model)
        return cls.parse(spec, view.n_layers, attn_types=view.attn_types())

    @classmethod
    def parse(cls, spec: str, n_layers: int, *, attn_types: Sequence[str] | None = None) -> LayerMap:
        """Build the map of ``spec`` (module docstring) for a model with ``n_layers`` layers.

        Args:
            spec: the spec string.
            n_layers: the model's depth.
            attn_types: per-layer "local"/"global" (``cfg.attn_types``), for ``first_of_type``;
                None = all layers of one type.
        """
        text = str(spec).strip().lower()
        if n_layers < 1:
            raise InputError(f"n_layers must be >= 1, got {n_layers}.")
        source = _parse_source(text, n_layers, attn_types)
        return cls(tuple(source), spec=text)


def check_spec(spec: str) -> None:
    """Syntax check of a spec without a model (depth-dependent checks come with the model)."""
    text = str(spec).strip().lower()
    if text in NAMED_SPECS or re.fullmatch(r">=\d+|\d+(,\d+)*|\d+(_\d+)+", text):
        return
    raise InputError(_syntax_message(spec))


def _syntax_message(spec: str) -> str:
    return (f"Bad layer spec {spec!r}: use all, none, >=m, a list like 3,5,7, cla, lckv, "
            "first_of_type, or a layer_types string like 0_0_2_2.")


def _parse_source(text: str, n: int, attn_types: Sequence[str] | None) -> list[int]:
    check_spec(text)
    if text == "all":
        return [0] * n
    if text == "none":
        return list(range(n))
    if text == "cla":
        return [layer - layer % 2 for layer in range(n)]
    if text == "lckv":
        return [n - 1] * n
    if text == "first_of_type":
        return _first_of_type(n, attn_types)
    if text.startswith(">="):
        m = int(text[2:])
        if not 1 <= m <= n - 1:
            raise InputError(f"In '>=m', m must be in 1..{n - 1} for a {n}-layer model, got {m}.")
        return [0 if layer >= m else layer for layer in range(n)]
    if "_" in text:
        source = [int(x) for x in text.split("_")]
        if len(source) != n:
            raise InputError(f"layer_types {text!r} has {len(source)} entries; the model has {n} layers.")
        return source
    layers = [int(x) for x in text.split(",")]
    bad = [layer for layer in layers if not 1 <= layer <= n - 1]
    if bad:
        raise InputError(f"Layers {bad} cannot take layer 0's K/V: use layers in 1..{n - 1}.")
    if len(set(layers)) != len(layers):
        raise InputError(f"Layer list {text!r} repeats a layer.")
    return [0 if layer in layers else layer for layer in range(n)]


def _first_of_type(n: int, attn_types: Sequence[str] | None) -> list[int]:
    types = list(attn_types) if attn_types is not None else ["global"] * n
    if len(types) != n:
        raise InputError(f"attn_types has {len(types)} entries; the model has {n} layers.")
    first: dict[str, int] = {}
    return [first.setdefault(t, layer) for layer, t in enumerate(types)]
