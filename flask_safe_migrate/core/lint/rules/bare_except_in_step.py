"""Rule bare-except-in-step: a step swallows the errors of its SQL."""

from __future__ import annotations

import ast
import typing as t

from .._code import ModuleCode
from .._code import call_name
from ..findings import Severity
from ._rule import Scope

RULE = "bare-except-in-step"
SEVERITY = Severity.ERROR
SCOPE = Scope.CODE
SUMMARY = "a bare except (or except Exception) that swallows errors in a step"
HINT = (
    "let the error propagate (or re-raise it): the runner rolls the step back, "
    "retries what is retryable and records nothing for a failed step"
)

_BROAD = {"Exception", "BaseException"}


def check(module: ModuleCode) -> t.Iterator[tuple[int, str]]:
    """Flag broad handlers without ``raise``, and ``suppress(Exception)``."""
    for fn in module.step_functions:
        for node in ast.walk(fn):
            if isinstance(node, ast.ExceptHandler) and _is_broad(node.type):
                if not any(isinstance(n, ast.Raise) for n in ast.walk(node)):
                    what = "except:" if node.type is None else "except Exception:"
                    yield (
                        node.lineno,
                        f"{what} without raise in step function {fn.name}(): a "
                        "failed statement is hidden, the transaction is left "
                        "aborted, or the step is recorded as applied half done",
                    )
            elif (
                isinstance(node, ast.Call)
                and call_name(node) == "suppress"
                and any(_is_broad(arg) for arg in node.args)
            ):
                yield (
                    node.lineno,
                    f"suppress(Exception) in step function {fn.name}() hides a "
                    "failed statement",
                )


def _is_broad(node: ast.AST | None) -> bool:
    if node is None:
        return True
    if isinstance(node, ast.Tuple):
        return any(_is_broad(elt) for elt in node.elts)
    return call_name(node) in _BROAD
