"""Rule do-block-swallows-errors: an EXCEPTION WHEN handler that does not raise."""

from __future__ import annotations

import typing as t

from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "do-block-swallows-errors"
SEVERITY = Severity.WARNING
SCOPE = Scope.STATEMENT
#: Judges the block as a whole (nested blocks' handlers included).
EMBEDDED = False
SUMMARY = "a DO block's EXCEPTION WHEN handler swallows the error"
HINT = (
    "let the error through (RAISE; at the end of the handler), or catch only the "
    "condition that means the change is already made (duplicate_object...)"
)


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag handlers other than already-exists guards that do not raise again."""
    if ctx.stmt.swallowed:
        conditions = ", ".join(ctx.stmt.swallowed)
        yield (
            f"EXCEPTION WHEN {conditions} in the DO block at line {ctx.stmt.line} "
            "does not raise again: a failed change is swallowed and the step is "
            "recorded as applied"
        )
