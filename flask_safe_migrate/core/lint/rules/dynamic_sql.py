"""Rule dynamic-sql: a DO block runs SQL that is only known at run time."""

from __future__ import annotations

import typing as t

from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "dynamic-sql"
SEVERITY = Severity.WARNING
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = "a DO block whose SQL is built at run time cannot be checked"
HINT = (
    "write the statements out, or review the generated SQL by hand and suppress "
    "this finding with a reason"
)


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag statements whose embedded SQL the parser could not follow."""
    if ctx.stmt.dynamic_sql:
        yield "the SQL this block runs is computed at run time; it was not checked"
