"""Field docstrings of dataclass configs (the string literal under each field), read with `ast`.

They are the single source of a field's help text: ``--help``, error messages and the README
all read them here.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap


def _class_docs(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined in a REPL / notebook cell
        return {}
    body = ast.parse(source).body[0].body
    docs: dict[str, str] = {}
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """field name -> its docstring, one line, over the class and its dataclass bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object:
            docs.update(_class_docs(klass))
    return docs
