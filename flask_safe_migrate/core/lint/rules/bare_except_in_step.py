"""Rule bare-except-in-step: a step swallows the errors of its SQL."""

from __future__ import annotations

import ast
import typing as t

from .._code import ModuleCode
from .._code import call_name
from .._code import chain_text
from .._code import reach
from ..findings import Severity
from ._rule import Scope

RULE = "bare-except-in-step"
SEVERITY = Severity.ERROR
SCOPE = Scope.CODE
SUMMARY = (
    "a bare except, except Exception or except of a database error that swallows "
    "the error (or only logs it and continues) in a step"
)
HINT = (
    "let the error propagate (or re-raise it): the runner rolls the step back, "
    "retries what is retryable and records nothing for a failed step"
)

_BROAD = {"Exception", "BaseException"}
#: Database errors (SQLAlchemy's and the DB-API's): catching one in a step and
#: carrying on leaves the transaction aborted or the change half done.
_DATABASE_ERRORS = {
    "DBAPIError",
    "DataError",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "SQLAlchemyError",
}
_LOGGING = {
    "critical",
    "debug",
    "error",
    "exception",
    "info",
    "log",
    "print",
    "warn",
    "warning",
}


def check(module: ModuleCode) -> t.Iterator[tuple[int, str]]:
    """Flag broad or database-error handlers without ``raise`` in step functions
    (and in the project functions they call), and ``suppress(Exception)``."""
    for fn in module.step_functions:
        yield from _helper_handlers(module, fn)
        for node in ast.walk(fn):
            if isinstance(node, ast.ExceptHandler) and _swallows(node):
                what = "except:" if node.type is None else "except Exception:"
                if node.type is not None and not _is_broad(node.type):
                    what = f"except {ast.unparse(node.type)}:"
                logs = any(
                    isinstance(n, ast.Call) and call_name(n) in _LOGGING
                    for n in ast.walk(node)
                )
                how = "that logs and continues" if logs else "without raise"
                yield (
                    node.lineno,
                    f"{what} {how} in step function {fn.name}(): a failed "
                    "statement is hidden, the transaction is left aborted, or the "
                    "step is recorded as applied half done",
                )
            elif (
                isinstance(node, ast.Call)
                and call_name(node) == "suppress"
                and any(_is_broad(a) or _is_database_error(a) for a in node.args)
            ):
                yield (
                    node.lineno,
                    f"{ast.unparse(node)} in step function {fn.name}() hides a "
                    "failed statement",
                )


#: Calls that send SQL: a helper's handler around one of them matters.
_SQL_CALLS = {"execute", "exec_driver_sql", "executemany", "commit", "flush"}


def _helper_handlers(module: ModuleCode, fn: ast.AST) -> t.Iterator[tuple[int, str]]:
    """Calls from step *fn* into project functions that send SQL in a ``try`` and
    swallow its errors."""
    own = {id(node) for node in module.step_functions}
    for node in ast.walk(fn):
        if not isinstance(node, ast.Call):
            continue
        found = reach(module, node, lambda n, _: _swallowing_try(n) is not None)
        if found is None or id(found[0][0].function) in own:
            continue
        chain, hit = found
        handler = _swallowing_try(hit)
        assert handler is not None
        what = (
            "except:"
            if handler.type is None
            else f"except {ast.unparse(handler.type)}:"
        )
        yield (
            node.lineno,
            f"{what} without raise in {chain_text(chain)}, called by step function "
            f"{getattr(fn, 'name', '?')}(): a failed statement is hidden",
        )


def _swallowing_try(node: ast.AST) -> ast.ExceptHandler | None:
    """The handler of a ``try`` that sends SQL and swallows its errors, if any."""
    if not isinstance(node, ast.Try):
        return None
    sends_sql = any(
        isinstance(n, ast.Call) and call_name(n) in _SQL_CALLS
        for statement in node.body
        for n in ast.walk(statement)
    )
    swallowing = [h for h in node.handlers if _swallows(h)]
    return swallowing[0] if sends_sql and swallowing else None


def _swallows(handler: ast.ExceptHandler) -> bool:
    """A broad or database-error handler that does not raise."""
    if not (_is_broad(handler.type) or _is_database_error(handler.type)):
        return False
    return not any(isinstance(n, ast.Raise) for n in ast.walk(handler))


def _is_database_error(node: ast.AST | None) -> bool:
    if isinstance(node, ast.Tuple):
        return any(_is_database_error(elt) for elt in node.elts)
    return node is not None and call_name(node) in _DATABASE_ERRORS


def _is_broad(node: ast.AST | None) -> bool:
    if node is None:
        return True
    if isinstance(node, ast.Tuple):
        return any(_is_broad(elt) for elt in node.elts)
    return call_name(node) in _BROAD
