"""Rule transaction-around-retry: a transaction block wraps a retried call."""

from __future__ import annotations

import ast
import typing as t

from .._code import CONNECT_CALLS
from .._code import ModuleCode
from .._code import call_name
from .._code import dotted
from .._code import is_retry_call
from .._code import walk_local
from ..findings import Severity
from ._rule import Scope

RULE = "transaction-around-retry"
SEVERITY = Severity.ERROR
SCOPE = Scope.CODE
SUMMARY = (
    "an engine.begin() / engine.connect() / session block that wraps a retry-helper "
    "call or a step handle call"
)
HINT = (
    "call the retry helper (or the handle) outside any connection or transaction "
    "block: each retry attempt opens its own connection and transaction"
)


def check(module: ModuleCode) -> t.Iterator[tuple[int, str]]:
    """Flag ``with <x>.begin()/connect()/Session(...)`` around retried work."""
    handles = {
        name: fn for fn, name in module.step_functions.items() if name is not None
    }
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.With | ast.AsyncWith):
            continue
        opener = next(
            (item.context_expr for item in node.items if _opens(item.context_expr)),
            None,
        )
        if opener is None:
            continue
        for inner in _body_nodes(node):
            if is_retry_call(inner):
                yield (
                    node.lineno,
                    f"{_text(opener)} holds a connection around "
                    f"{call_name(inner)}(...), whose retries need a fresh one; a "
                    "disconnect inside kills the outer block too",
                )
                break
            handle = _handle_call(inner, handles)
            if handle is not None:
                yield (
                    node.lineno,
                    f"{_text(opener)} opens a second connection around the step "
                    f"handle call {handle}.{call_name(inner)}(...): the step's SQL "
                    "must run in the runner's transaction only",
                )
                break


def _opens(expr: ast.AST) -> bool:
    if not isinstance(expr, ast.Call):
        return False
    name = call_name(expr)
    return name in CONNECT_CALLS or name in {"Session", "session_scope"}


def _body_nodes(node: ast.With | ast.AsyncWith) -> t.Iterator[ast.AST]:
    for statement in node.body:
        yield statement
        yield from walk_local(statement)


def _handle_call(node: ast.AST, handles: dict[str, t.Any]) -> str | None:
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in handles
    ):
        return node.func.value.id
    return None


def _text(expr: ast.AST) -> str:
    name = dotted(expr.func) if isinstance(expr, ast.Call) else ""
    return f"{name or call_name(expr)}()"
