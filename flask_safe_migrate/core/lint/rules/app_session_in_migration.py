"""Rule app-session-in-migration: migration code uses the app's session or engine."""

from __future__ import annotations

import ast
import typing as t

from .._code import ModuleCode
from .._code import walk_local
from ..findings import Severity
from ._rule import Scope

RULE = "app-session-in-migration"
SEVERITY = Severity.ERROR
SCOPE = Scope.CODE
SUMMARY = "db.session or the app's engine (db.engine) used in migration code"
HINT = (
    "send SQL through the step handle (m.execute) or execute_with_retry on the "
    "migration engine; never db.session or db.engine, whose pooled connections "
    "the app's requests share"
)

_APP_ATTRIBUTES = {"session": "db.session", "engine": "db.engine"}


def check(module: ModuleCode) -> t.Iterator[tuple[int, str]]:
    """Flag ``db.session``, ``db.engine`` and ``db.get_engine()`` in migration code."""
    for scope in module.migration_scopes():
        for node in walk_local(scope):
            if not (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in module.db_names
            ):
                continue
            if node.attr in _APP_ATTRIBUTES or node.attr == "get_engine":
                where = _where(scope)
                yield (
                    node.lineno,
                    f"{node.value.id}.{node.attr} used {where}: the app's "
                    "connections are not retried and may be dead or mid-transaction",
                )


def _where(scope: ast.AST) -> str:
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
        return f"in migration function {scope.name}()"
    return "at the top level of a module that registers steps"
