"""Rule transaction-around-retry: a transaction block wraps a retried call."""

from __future__ import annotations

import ast
import typing as t

from .._code import CONNECT_CALLS
from .._code import FunctionNode
from .._code import ModuleCode
from .._code import call_name
from .._code import chain_text
from .._code import dotted
from .._code import is_retry_call
from .._code import reach
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
            retried = _retried(module, inner)
            if retried is not None:
                yield (
                    node.lineno,
                    f"{_text(opener)} holds a connection around {retried}, whose "
                    "retries need a fresh one; a disconnect inside kills the outer "
                    "block too",
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

    yield from _unmanaged_connections(module)


def _retried(module: ModuleCode, node: ast.AST) -> str | None:
    """``helper(...)`` when *node* calls a retry helper, directly or through project
    functions (then the call chain is named), else None."""
    if is_retry_call(node):
        return f"{call_name(node)}(...)"
    if not isinstance(node, ast.Call):
        return None
    found = reach(module, node, lambda n, _: is_retry_call(n))
    if found is None:
        return None
    chain, hit = found
    return f"{call_name(node)}(...), which calls {call_name(hit)}(...) via " + (
        chain_text(chain)
    )


_RELEASES = frozenset({"close", "commit", "rollback", "invalidate", "detach"})


def _unmanaged_connections(module: ModuleCode) -> t.Iterator[tuple[int, str]]:
    """``conn = engine.begin()`` (no ``with``) still open when retried work runs.

    ``engine.connect()`` counts once the connection was used (it then holds a
    transaction); a connection used only inside the retried function is
    connection-across-retries instead.
    """
    scopes: list[ast.AST] = [module.tree]
    scopes += [n for n in ast.walk(module.tree) if isinstance(n, FunctionNode)]
    for scope in scopes:
        nodes = sorted(
            (n for n in walk_local(scope) if hasattr(n, "lineno")),
            key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)),
        )
        for index, node in enumerate(nodes):
            if not (isinstance(node, ast.Assign) and _opens(node.value)):
                continue
            names = {t.id for t in node.targets if isinstance(t, ast.Name)}
            # begin() opens a transaction at once; connect() with its first use.
            in_transaction = call_name(node.value) != "connect"
            for later in nodes[index + 1 :]:
                if _releases(later, names):
                    break
                in_transaction = in_transaction or _uses(later, names)
                retried = _retried(module, later) if in_transaction else None
                if retried is not None:
                    name = ", ".join(sorted(names)) or "a connection"
                    yield (
                        node.lineno,
                        f"{name} = {_text(node.value)} keeps a connection (and "
                        f"its transaction) open, without a with block, across "
                        f"{retried} at line {later.lineno}",
                    )
                    break


def _uses(node: ast.AST, names: set[str]) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in names
    )


def _releases(node: ast.AST, names: set[str]) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in names
        and node.func.attr in _RELEASES
    )


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
