"""Rule one-time-backfill-not-update: a ``one_time_backfill`` fills in data."""

from __future__ import annotations

import typing as t

from ..context import StatementContext
from ..findings import Severity
from . import _category
from ._rule import Scope

RULE = "one-time-backfill-not-update"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = "DML declared as one_time_backfill that is not an UPDATE or INSERT"
HINT = (
    "a one-time backfill fills in data (UPDATE, INSERT ... SELECT); delete rows "
    "under dedup_before_unique or orphan_cleanup, and never TRUNCATE in a step"
)


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag DELETE, TRUNCATE and COPY in a one_time_backfill step."""
    if not _category.applies(ctx, "one_time_backfill"):
        return
    other = _category.kinds_outside(ctx, {"update", "insert", "merge"})
    if other:
        yield (
            f"{'/'.join(k.upper() for k in other)} in a one_time_backfill step, "
            "which may only fill in data"
        )
