"""Rule ddl-in-backfill-step: a backfill step changes data, never the schema."""

from __future__ import annotations

import typing as t

from ...sql import StatementKind
from ...steps import Phase
from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "ddl-in-backfill-step"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
SUMMARY = "DDL in a backfill step"
HINT = (
    "put the schema change in a schema step (it runs first, under lock_timeout) "
    "and keep the backfill to batched UPDATEs"
)


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag DDL and blocking index builds in a backfill step."""
    stmt = ctx.stmt
    if ctx.phase is not Phase.BACKFILL or stmt.node_type == "DoStmt":
        return  # a DO block: each statement it runs is checked instead
    if stmt.kind is StatementKind.DDL or (
        stmt.kind is StatementKind.INDEX_BUILD and not stmt.concurrent
    ):
        yield (
            f"{stmt.node_type} in a backfill step, which runs batch after batch "
            "without the schema phase's lock_timeout"
        )
