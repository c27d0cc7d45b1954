"""Rule session-load: LOAD of a shared library into the session."""

from __future__ import annotations

import typing as t

from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "session-load"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = "LOAD of a shared library into the session"
HINT = (
    "configure the library with shared_preload_libraries or session_preload_libraries, "
    "or CREATE EXTENSION"
)

_HAZARDS = {"load"}


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag the statement when the parser saw this transaction-pooling hazard."""
    if any(h in _HAZARDS for h in ctx.stmt.hazards):
        yield ("LOAD affects only the pooled server connection that runs it")
