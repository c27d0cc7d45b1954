"""Rule session-cursor-with-hold: a cursor that outlives the transaction."""

from __future__ import annotations

import typing as t

from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "session-cursor-with-hold"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = "DECLARE ... WITH HOLD (a cursor that outlives the transaction)"
HINT = (
    "use a cursor without HOLD inside the step, or keyset pagination in a backfill step"
)

_HAZARDS = {"declare-with-hold"}


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag the statement when the parser saw this transaction-pooling hazard."""
    if any(h in _HAZARDS for h in ctx.stmt.hazards):
        yield (
            "a WITH HOLD cursor outlives the transaction on a pooled server "
            "connection this client will not see again"
        )
