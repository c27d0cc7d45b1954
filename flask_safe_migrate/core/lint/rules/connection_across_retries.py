"""Rule connection-across-retries: a connection opened once, reused by each retry."""

from __future__ import annotations

import ast
import re
import typing as t

from .._code import FunctionNode
from .._code import ModuleCode
from .._code import call_name
from .._code import is_connect_call
from .._code import is_retry_call
from .._code import is_retry_decorator
from .._code import walk_local
from ..findings import Severity
from ._rule import Scope

RULE = "connection-across-retries"
SEVERITY = Severity.ERROR
SCOPE = Scope.CODE
SUMMARY = "a connection opened outside a retry loop and reused inside it"
HINT = (
    "open the connection inside each attempt, e.g. run_with_retry(engine, fn) "
    "where fn uses the connection it is given; after a disconnect the old one "
    "is dead for every later attempt"
)

#: Parameter names that hold a connection a retry decorator would pass again.
_CONNECTION_PARAMS = {
    "con",
    "conn",
    "connection",
    "cur",
    "cursor",
    "db_conn",
    "dbapi_connection",
    "session",
}
_RETRY_WORDS = re.compile(r"attempt|retr|tries", re.IGNORECASE)


def check(module: ModuleCode) -> t.Iterator[tuple[int, str]]:
    """Flag retry loops, retried functions and retried callables reusing a conn."""
    scopes: list[ast.AST] = [module.tree]
    scopes += [n for n in ast.walk(module.tree) if isinstance(n, FunctionNode)]
    for scope in scopes:
        opened = _connections(scope)
        for node in walk_local(scope):
            if isinstance(node, ast.For | ast.While) and _is_retry_loop(node):
                inside = {id(n) for n in ast.walk(node)}
                outside = {
                    name: line
                    for name, (line, bind) in opened.items()
                    if id(bind) not in inside
                }
                where = f"the retry loop at line {node.lineno}"
                yield from _reused(node, outside, where)
            elif isinstance(node, FunctionNode) and any(
                is_retry_decorator(d) for d in node.decorator_list
            ):
                yield from _retried_function(node, opened)
            elif is_retry_call(node):
                assert isinstance(node, ast.Call)
                yield from _retried_callables(node, scope, opened)


def _connections(scope: ast.AST) -> dict[str, tuple[int, ast.AST]]:
    """Names bound in *scope* to a new connection: name -> (line, binding node)."""
    found: dict[str, tuple[int, ast.AST]] = {}
    for node in walk_local(scope):
        if isinstance(node, ast.Assign) and is_connect_call(node.value):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = (node.lineno, node)
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                var = item.optional_vars
                if is_connect_call(item.context_expr) and isinstance(var, ast.Name):
                    found[var.id] = (node.lineno, node)
    return found


#: Iterables whose items are retry attempts (tenacity's ``for attempt in Retrying()``).
_ATTEMPT_ITERABLES = {"Retrying", "AsyncRetrying"}


def _is_retry_loop(loop: ast.For | ast.While) -> bool:
    if (
        isinstance(loop, ast.For)
        and isinstance(loop.iter, ast.Call)
        and call_name(loop.iter) in _ATTEMPT_ITERABLES
    ):
        return True
    if isinstance(loop, ast.For):
        counted = isinstance(loop.iter, ast.Call) and call_name(loop.iter) == "range"
        named = _RETRY_WORDS.search(ast.unparse(loop.target) + ast.unparse(loop.iter))
        if not (counted or named):
            return False
    for node in walk_local(loop):
        if not isinstance(node, ast.Try) or not node.handlers:
            continue
        again = any(
            isinstance(n, ast.Continue)
            or (isinstance(n, ast.Call) and "sleep" in call_name(n))
            for handler in node.handlers
            for n in ast.walk(handler)
        )
        done = any(
            isinstance(n, ast.Break | ast.Return)
            for statement in node.body + node.orelse
            for n in ast.walk(statement)
        )
        if again or done:
            return True
    return False


def _reused(
    body: ast.AST, opened: dict[str, int], where: str
) -> t.Iterator[tuple[int, str]]:
    for node in ast.walk(body):
        if (
            isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Load)
            and node.id in opened
        ):
            yield (
                node.lineno,
                f"connection {node.id} (opened at line {opened[node.id]}) is reused "
                f"by {where}",
            )
            return


def _retried_function(
    fn: FunctionNode, opened: dict[str, tuple[int, ast.AST]]
) -> t.Iterator[tuple[int, str]]:
    params = [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
    for param in params:
        if param in _CONNECTION_PARAMS:
            yield (
                fn.lineno,
                f"retried function {fn.name}() takes its connection as parameter "
                f"{param!r}: every retry gets the same one back",
            )
            return
    free = _free_connections(fn, opened)
    yield from _reused(fn, free, f"retried function {fn.name}()")


def _retried_callables(
    call: ast.Call, scope: ast.AST, opened: dict[str, tuple[int, ast.AST]]
) -> t.Iterator[tuple[int, str]]:
    local_defs = {n.name: n for n in walk_local(scope) if isinstance(n, FunctionNode)}
    for arg in [*call.args, *(k.value for k in call.keywords)]:
        target: ast.AST | None = None
        if isinstance(arg, ast.Lambda):
            target = arg
        elif isinstance(arg, ast.Name):
            target = local_defs.get(arg.id)
        if target is None:
            continue
        free = _free_connections(target, opened)
        yield from _reused(target, free, f"the function retried by {call_name(call)}()")


def _free_connections(
    fn: ast.AST, opened: dict[str, tuple[int, ast.AST]]
) -> dict[str, int]:
    """The outer connections *fn* uses without binding the name itself."""
    own: set[str] = set()
    if isinstance(fn, FunctionNode | ast.Lambda):
        args = fn.args
        own.update(a.arg for a in args.posonlyargs + args.args + args.kwonlyargs)
    own.update(
        n.id
        for n in ast.walk(fn)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    )
    return {name: line for name, (line, _) in opened.items() if name not in own}
