"""Rule session-advisory-lock: a session-level advisory lock (pg_advisory_lock)."""

from __future__ import annotations

import typing as t

from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "session-advisory-lock"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = "a session-level advisory lock (pg_advisory_lock)"
HINT = (
    "use pg_advisory_xact_lock / pg_try_advisory_xact_lock, released at COMMIT; "
    "the runner already serializes migrators on its own xact lock"
)

_HAZARDS = {"session-advisory-lock"}


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag the statement when the parser saw this transaction-pooling hazard."""
    if any(h in _HAZARDS for h in ctx.stmt.hazards):
        yield (
            "a session advisory lock is held by the server connection, which a "
            "transaction-mode pooler hands to another client after COMMIT"
        )
