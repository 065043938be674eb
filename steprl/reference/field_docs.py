"""The attribute docstrings and written annotations of a dataclass's fields, read from its source.

The project documents each config field with a string literal under it; Python keeps no such docstring at run
time, so they are read from the class's source with `ast`, along with each annotation as written
(`str | None`, not a resolved type object).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldSource:
    """What the source says about one field: its annotation as written and its docstring ('' when none)."""

    annotation: str
    doc: str


def _own_fields(cls: type) -> dict[str, FieldSource]:
    """The fields declared in `cls` itself (not its bases); none for a class without source (made at run time),
    whose fields then show as undocumented."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    tree = ast.parse(textwrap.dedent(source))
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    out = {}
    for i, stmt in enumerate(body):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        after = body[i + 1] if i + 1 < len(body) else None
        is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(
            after.value.value, str)
        out[stmt.target.id] = FieldSource(ast.unparse(stmt.annotation),
                                          inspect.cleandoc(after.value.value) if is_doc else "")
    return out


def field_sources(cls: type) -> dict[str, FieldSource]:
    """Field name -> FieldSource for a dataclass, inherited fields included (a subclass's declaration wins)."""
    out: dict[str, FieldSource] = {}
    for base in reversed(cls.__mro__):
        if "__dataclass_fields__" in vars(base):
            out.update(_own_fields(base))
    return out
