"""Rule session-temp-table: a temporary table expected to outlive the transaction."""

from __future__ import annotations

import typing as t

from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "session-temp-table"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = "a temporary table expected to outlive the transaction"
HINT = (
    "add ON COMMIT DROP (and use it within the step), or use a regular table "
    "dropped by a later step"
)

_HAZARDS = {"temp-table"}


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag the statement when the parser saw this transaction-pooling hazard."""
    if any(h in _HAZARDS for h in ctx.stmt.hazards):
        yield (
            "a temporary table without ON COMMIT DROP stays on the pooled server "
            "connection after COMMIT, visible to the next client and gone for this one"
        )
