"""Rule dml-in-do-block: a DO block in a schema step changes data."""

from __future__ import annotations

import typing as t

from ...steps import Phase
from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "dml-in-do-block"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges the block as a whole.
EMBEDDED = False
SUMMARY = "a DO block in a schema step without a category runs INSERT/UPDATE/DELETE"
HINT = (
    "move the data change out of the block into a backfill step (migrate.backfill), "
    "or declare a small-DML category (seed, dedup_before_unique, orphan_cleanup, "
    "one_time_backfill) for a small one-time change"
)


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag a DO block that modifies data in an uncategorized schema step."""
    stmt = ctx.stmt
    if stmt.node_type != "DoStmt" or not stmt.dml_kinds:
        return
    if ctx.phase is not Phase.SCHEMA or ctx.step.category is not None:
        return
    kinds = "/".join(k.upper() for k in stmt.dml_kinds)
    targets = ", ".join(stmt.relations[:3]) or "tables"
    yield (
        f"the DO block at line {stmt.line} runs {kinds} on {targets} inside the "
        "schema step's transaction, holding its locks until the step commits"
    )
