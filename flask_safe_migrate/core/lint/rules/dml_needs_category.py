"""Rule dml-needs-category: DML in a schema step that declares no category."""

from __future__ import annotations

import typing as t

from ...sql import has_dml
from ...steps import Phase
from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "dml-needs-category"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = "DML in a schema step without a declared small-DML category"
HINT = (
    "move the data change to a backfill step (migrate.backfill), or declare "
    "category= seed, dedup_before_unique, orphan_cleanup or one_time_backfill "
    "for a small one-time change"
)


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag a data-modifying statement in an uncategorized schema step."""
    if ctx.stmt.node_type == "DoStmt":
        return  # dml-in-do-block names the block
    if ctx.phase is Phase.SCHEMA and ctx.step.category is None and has_dml(ctx.stmt):
        kinds = "/".join(k.upper() for k in ctx.stmt.dml_kinds) or "DML"
        yield (
            f"{kinds} in a schema step, which runs DDL only and holds its locks "
            "until the step commits"
        )
