"""Rule transaction-control: BEGIN / COMMIT / ROLLBACK / SAVEPOINT inside a step."""

from __future__ import annotations

import typing as t

from ...sql import StatementKind
from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "transaction-control"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
SUMMARY = "explicit transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT) in a step"
HINT = (
    "remove it: the runner wraps each schema step in one transaction with its "
    "ledger row, and each backfill batch in its own"
)


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag any transaction-control statement."""
    if ctx.stmt.kind is StatementKind.TRANSACTION_CONTROL:
        word = ctx.stmt.sql.split(None, 1)[0].upper() if ctx.stmt.sql else "it"
        yield (
            f"{word} inside a step ends or splits the runner's transaction, which "
            "breaks exactly-once (the ledger row commits with the step)"
        )
