"""Helpers to read the parser's nodes by their names, without importing pglast."""

from __future__ import annotations

import typing as t

__all__ = [
    "constraints_of",
    "dotted_name",
    "enum_name",
    "func_name",
    "is_node",
    "node_type",
    "relation_name",
    "type_name",
    "walk",
]


def is_node(value: object) -> bool:
    """Return whether *value* is a parse-tree node."""
    return type(value).__module__ == "pglast.ast"


def node_type(value: object) -> str:
    """Return the node's class name, e.g. ``"AlterTableCmd"``."""
    return type(value).__name__


def enum_name(value: object) -> str:
    """Return the member name of an enum field, e.g. ``"AT_AddColumn"``."""
    return str(getattr(value, "name", value))


def walk(root: object) -> t.Iterator[t.Any]:
    """Yield every node under *root* (itself included), in pre-order."""
    stack: list[object] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple | list):
            stack.extend(reversed(item))
            continue
        if not is_node(item):
            continue
        yield item
        children = [getattr(item, name, None) for name in t.cast(t.Iterable[str], item)]
        stack.extend(
            child
            for child in reversed(children)
            if isinstance(child, tuple | list) or is_node(child)
        )


def relation_name(range_var: t.Any) -> str:
    """Return ``relname`` of a ``RangeVar`` (the schema is left out), or ``""``."""
    return str(getattr(range_var, "relname", None) or "")


def dotted_name(range_var: t.Any) -> str:
    """Return ``schema.relname`` of a ``RangeVar`` (``relname`` without a schema)."""
    parts = (getattr(range_var, "schemaname", None), relation_name(range_var))
    return ".".join(str(part) for part in parts if part)


def func_name(call: t.Any) -> str:
    """Return the unqualified, lower-case name of a ``FuncCall``."""
    names = getattr(call, "funcname", None) or ()
    return str(getattr(names[-1], "sval", "")).lower() if names else ""


def type_name(column_def: t.Any) -> str:
    """Return the unqualified, lower-case type name of a ``ColumnDef``."""
    names = getattr(getattr(column_def, "typeName", None), "names", None) or ()
    return str(getattr(names[-1], "sval", "")).lower() if names else ""


def constraints_of(column_def: t.Any) -> tuple[t.Any, ...]:
    """Return the ``Constraint`` nodes of a ``ColumnDef``."""
    return tuple(getattr(column_def, "constraints", None) or ())
