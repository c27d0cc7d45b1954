"""Rule app-session-in-migration: migration code uses the app's session or engine."""

from __future__ import annotations

import ast
import typing as t

from .._code import ModuleCode
from .._code import chain_text
from .._code import reach
from .._code import walk_local
from ..findings import Severity
from ._rule import Scope

RULE = "app-session-in-migration"
SEVERITY = Severity.ERROR
SCOPE = Scope.CODE
SUMMARY = (
    "db.session, the app's engine (db.engine, db.create_all) or a model's query "
    "(Model.query) used in migration code"
)
HINT = (
    "send SQL through the step handle (m.execute) or execute_with_retry on the "
    "migration engine; never db.session or db.engine, whose pooled connections "
    "the app's requests share"
)

#: Attributes of ``db`` that reach the app's session or engine.
_APP_ATTRIBUTES = frozenset(
    {"session", "engine", "get_engine", "engines", "create_all", "drop_all", "reflect"}
)


def check(module: ModuleCode) -> t.Iterator[tuple[int, str]]:
    """Flag ``db.session``, ``db.engine`` and ``db.get_engine()`` in migration code,
    and calls from migration code into project functions that use them."""
    direct = {id(fn) for fn in module.migration_functions}
    for scope in module.migration_scopes():
        for node in walk_local(scope):
            if _is_app_attribute(node, module):
                assert isinstance(node, ast.Attribute)
                yield (
                    node.lineno,
                    f"{ast.unparse(node)} used {_where(scope)}: the app's "
                    "connections are not retried and may be dead or mid-transaction",
                )
            elif isinstance(node, ast.Call):
                found = reach(module, node, _is_app_attribute)
                if found is None:
                    continue
                chain, hit = found
                if chain[0].module is module and id(chain[0].function) in direct:
                    continue  # reported in that function itself
                yield (
                    node.lineno,
                    f"{ast.unparse(hit)} used by {chain_text(chain)}, called "
                    f"{_where(scope)}: the app's connections are not retried and "
                    "may be dead or mid-transaction",
                )


def _is_app_attribute(node: ast.AST, module: ModuleCode) -> bool:
    """``db.session``, ``db.engine``, ``db.create_all``... or ``Model.query`` (a
    Flask-SQLAlchemy model's query runs on the app's session)."""
    if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
        return False
    if node.value.id in module.db_names:
        return node.attr in _APP_ATTRIBUTES
    return node.attr == "query" and node.value.id[:1].isupper()


def _where(scope: ast.AST) -> str:
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
        return f"in migration function {scope.name}()"
    return "at the top level of a module that registers steps"
