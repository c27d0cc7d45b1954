"""Rule non-index-sql-in-index-step: an index step runs index builds only."""

from __future__ import annotations

import typing as t

from ...sql import StatementKind
from ...sql import has_dml
from ...steps import Phase
from .. import _ast
from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "non-index-sql-in-index-step"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = "SQL other than an index build, drop or ANALYZE in an index step"
HINT = (
    "keep index steps to CREATE/DROP INDEX CONCURRENTLY (and ANALYZE); put DDL "
    "in a schema step and data changes in a backfill step"
)

#: Kinds another rule already reports in any phase.
_REPORTED_ELSEWHERE = {StatementKind.SESSION_SETTING, StatementKind.TRANSACTION_CONTROL}


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag DDL, DML and utilities other than VACUUM/ANALYZE in an index step."""
    stmt = ctx.stmt
    if ctx.phase is not Phase.INDEX or stmt.kind in _REPORTED_ELSEWHERE:
        return
    if stmt.kind is StatementKind.INDEX_BUILD:
        return
    if stmt.kind is StatementKind.QUERY and not has_dml(stmt):
        return
    if _ast.node_type(stmt.node) == "VacuumStmt":
        return
    yield f"{stmt.kind.value.upper()} ({stmt.node_type}) in an index step"
