"""Rule session-listen: LISTEN in a migration step."""

from __future__ import annotations

import typing as t

from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "session-listen"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = "LISTEN in a migration step"
HINT = (
    "drop the LISTEN: through a transaction-mode pooler the notifications go to "
    "whichever client holds the server connection next"
)

_HAZARDS = {"listen"}


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag the statement when the parser saw this transaction-pooling hazard."""
    if any(h in _HAZARDS for h in ctx.stmt.hazards):
        yield ("LISTEN subscribes the pooled server connection, not this client")
