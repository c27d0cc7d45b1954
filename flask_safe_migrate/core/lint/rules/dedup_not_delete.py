"""Rule dedup-not-delete: a ``dedup_before_unique`` step deletes duplicates."""

from __future__ import annotations

import typing as t

from ..context import StatementContext
from ..findings import Severity
from . import _category
from ._rule import Scope

RULE = "dedup-not-delete"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = "DML declared as dedup_before_unique that is not a DELETE of duplicates"
HINT = (
    "delete the extra rows with DELETE ... USING / WHERE ... (keeping one per "
    "key), or pass dedup_keep= to migrate.index(...)"
)


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag non-DELETE DML, and a DELETE without a WHERE clause."""
    if not _category.applies(ctx, "dedup_before_unique"):
        return
    other = _category.kinds_outside(ctx, {"delete"})
    if other:
        yield (
            f"{'/'.join(k.upper() for k in other)} in a dedup_before_unique step, "
            "which may only delete duplicate rows"
        )
    elif _category.is_node(ctx, "DeleteStmt") and not _category.has_where(ctx):
        yield "the DELETE has no WHERE clause: it deletes every row, not duplicates"
