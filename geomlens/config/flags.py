"""CLI flags generated from a dataclass config: one flag per field, nothing written twice.

Each field ``n_segments: int | None`` becomes ``--n-segments`` with the field's docstring as
help, its default shown from the dataclass, registry choices listed with their descriptions,
``--x/--no-x`` for booleans, ``nargs="+"`` (commas accepted too) for lists, JSON for dicts, and
the word ``none`` for None. Flags the user did not give are absent from the namespace, so the
dataclass default applies: `namespace_values` + `build_config` is the whole CLI -> config path.

Fields that declare ``metadata={"group": "text source"}`` share one argument group; a group's
fields listed in ``metadata["exclusive"]`` are mutually exclusive (``--domains`` | ``--texts``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any, Callable

from geomlens.config.base import describe_choices
from geomlens.config.build import type_hints
from geomlens.config.docs import field_docs

NONE_WORDS = ("none", "null")


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _split(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), type(None) in args
    return tp, False


def _scalar_parser(tp: Any, none_words: tuple[str, ...]) -> Callable[[str], Any]:
    base, optional = _split(tp)
    words = none_words if optional else ()

    def parse(text: str) -> Any:
        if text.strip().lower() in words:
            return None
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if base is dict or typing.get_origin(base) is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError("expects a JSON object")
            return value
        return text

    parse.__name__ = getattr(base, "__name__", "value")  # argparse names it in errors
    return parse


def _list_action(parse: Callable[[str], Any]) -> type[argparse.Action]:
    class ListAction(argparse.Action):
        """nargs='+' whose items may also be comma-separated (``--domains a,b`` = ``a b``)."""

        def __call__(self, parser, namespace, values, option_string=None):
            out = []
            for value in values:
                for piece in (p.strip() for p in value.split(",")):
                    if piece:
                        try:
                            out.append(parse(piece))
                        except ValueError:
                            parser.error(f"argument {option_string}: invalid value {piece!r}")
            setattr(namespace, self.dest, out)

    return ListAction


def _help(f: dataclasses.Field, doc: str, default: Any) -> str:
    text = doc or f.name
    source = f.metadata.get("choices")
    if source is not None:
        desc = describe_choices(source)
        text += " Choices: " + "; ".join(f"{k} ({v})" if v else k for k, v in desc.items()) + "."
    return text.replace("%", "%%") + f" (default: {default!r})".replace("%", "%%")


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _add_field(target, f: dataclasses.Field, tp: Any, doc: str) -> None:
    default = _field_default(f)
    kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": _help(f, doc, default)}
    names = [flag_name(f.name), *f.metadata.get("aliases", ())]
    base, _ = _split(tp)
    none_words = NONE_WORDS + ((f.metadata["none_token"],) if f.metadata.get("none_token") else ())
    if base is bool:
        target.add_argument(*names, action=argparse.BooleanOptionalAction, **kw)
        return
    if typing.get_origin(base) in (list, tuple) or base in (list, tuple):
        item = (typing.get_args(base) or (str,))[0]
        kw.update(nargs="+", action=_list_action(_scalar_parser(item, none_words)),
                  metavar=f.name.upper())
        target.add_argument(*names, **kw)
        return
    source = f.metadata.get("choices")
    if source is not None and not isinstance(source, str):
        kw["metavar"] = "{" + ",".join(describe_choices(source)) + "}"
    target.add_argument(*names, type=_scalar_parser(tp, none_words), **kw)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per field of the dataclass ``cls`` (see the module docstring)."""
    docs, hints = field_docs(cls), type_hints(cls)
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        target = parser
        group = f.metadata.get("group")
        if group:
            if group not in groups:
                outer = parser.add_argument_group(group)
                groups[group] = (outer, outer.add_mutually_exclusive_group())
            outer, exclusive = groups[group]
            target = exclusive if f.metadata.get("exclusive") else outer
        _add_field(target, f, hints.get(f.name, str), docs.get(f.name, ""))


def config_fields_with_flags(cls: type) -> dict[str, str]:
    """field name -> its flag, for every init field (what `add_config_arguments` adds)."""
    return {f.name: flag_name(f.name) for f in dataclasses.fields(cls)
            if f.init and f.metadata.get("cli") is not False}


def namespace_values(ns: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The config fields the user gave on the command line (absent ones keep their default)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return {k: v for k, v in vars(ns).items() if k in names}
