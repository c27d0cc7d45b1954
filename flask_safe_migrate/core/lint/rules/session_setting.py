"""Rule session-setting: SET / RESET / DISCARD change the pooled session."""

from __future__ import annotations

import typing as t

from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "session-setting"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = "a session-level SET, RESET, set_config(..., false) or DISCARD"
HINT = (
    "use SET LOCAL (or set_config(name, value, true)), which ends with the "
    "step's transaction; the runner sets lock_timeout and statement_timeout itself"
)


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag settings that outlive the transaction."""
    hazards = ctx.stmt.hazards
    if "session-set" in hazards:
        yield (
            "a session setting outlives the step and, through a transaction-mode "
            "pooler, leaks into other clients' transactions"
        )
    elif "discard" in hazards:
        yield (
            "DISCARD resets the pooled server connection's state, which belongs to "
            "the pooler, not to this client"
        )
