"""Rule session-prepare: PREPARE of a named server-side statement."""

from __future__ import annotations

import typing as t

from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "session-prepare"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = "PREPARE of a named server-side statement"
HINT = "send the statement itself (with parameters) instead of PREPARE/EXECUTE"

_HAZARDS = {"prepare"}


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag the statement when the parser saw this transaction-pooling hazard."""
    if any(h in _HAZARDS for h in ctx.stmt.hazards):
        yield (
            "a prepared statement lives on the server connection: through a "
            "transaction-mode pooler the next EXECUTE may reach another one"
        )
