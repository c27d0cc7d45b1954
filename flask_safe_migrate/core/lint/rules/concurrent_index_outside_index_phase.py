"""Rule concurrent-index-outside-index-phase: CONCURRENTLY outside an index step."""

from __future__ import annotations

import typing as t

from ...steps import Phase
from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "concurrent-index-outside-index-phase"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
SUMMARY = "a CONCURRENTLY index build or drop outside the index phase"
HINT = (
    "register the index with migrate.index(...) (or @migrate.index): the index "
    "phase runs it outside any transaction and rebuilds an INVALID leftover"
)


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag CREATE/DROP INDEX CONCURRENTLY and REINDEX CONCURRENTLY elsewhere."""
    if ctx.stmt.concurrent and ctx.block is not None:
        yield "CONCURRENTLY in a DO block: the block always runs in a transaction"
    elif ctx.stmt.concurrent and ctx.phase is not Phase.INDEX:
        yield (
            f"CONCURRENTLY in a {ctx.phase.value} step: it cannot run inside the "
            "step's transaction"
        )
