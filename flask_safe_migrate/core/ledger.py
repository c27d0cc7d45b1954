"""The ledger table: which steps are applied, their checksums, and phase progress.

Every statement here is built as text with literals quoted by :func:`literal`, so a
caller can put several of them in one network message (one round trip).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import typing as t
from dataclasses import dataclass

from .sql import duration_literal
from .sql import literal
from .sql import quote_ident

__all__ = ["Ledger", "LedgerRow", "duration_literal", "literal", "quote_ident"]

#: Ledger columns, in SELECT order.
_COLUMNS = (
    "step_id",
    "phase",
    "checksum",
    "state",
    "applied_at",
    "started_at",
    "duration_seconds",
    "attempts",
    "progress",
    "lease_owner",
    "lease_expires_at",
)


@dataclass(frozen=True)
class LedgerRow:
    """One row of the ledger."""

    step_id: str
    phase: str
    checksum: str
    state: str
    applied_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    duration_seconds: float | None = None
    attempts: int = 0
    progress: dict[str, t.Any] | None = None
    lease_owner: str | None = None
    lease_expires_at: dt.datetime | None = None

    @property
    def is_applied(self) -> bool:
        """Whether the step finished."""
        return self.state == "applied"


class Ledger:
    """The ledger table of one migrator: its name, lock key and statements."""

    def __init__(self, table: str = "safe_migrate_ledger", schema: str | None = None):
        self.table = table
        self.schema = schema
        self.qualified = (
            f"{quote_ident(schema)}.{quote_ident(table)}"
            if schema
            else quote_ident(table)
        )
        digest = hashlib.sha256(
            f"flask-safe-migrate:{schema or ''}.{table}".encode()
        ).digest()
        #: The ``pg_advisory_xact_lock`` key that serializes runners on this ledger.
        self.lock_key = int.from_bytes(digest[:8], "big", signed=True)

    # -- statements ------------------------------------------------------------

    def create_sql(self) -> str:
        """Statements that create the ledger if missing (run under the lock)."""
        schema = (
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)};\n"
            if self.schema
            else ""
        )
        return (
            f"{schema}CREATE TABLE IF NOT EXISTS {self.qualified} (\n"
            "    step_id text PRIMARY KEY,\n"
            "    phase text NOT NULL,\n"
            "    checksum text NOT NULL,\n"
            "    state text NOT NULL,\n"
            "    applied_at timestamptz,\n"
            "    started_at timestamptz NOT NULL DEFAULT now(),\n"
            "    duration_seconds double precision,\n"
            "    attempts integer NOT NULL DEFAULT 1,\n"
            "    progress jsonb,\n"
            "    lease_owner text,\n"
            "    lease_expires_at timestamptz\n"
            ")"
        )

    def select_all_sql(self) -> str:
        """The one query of the fast path: every row."""
        return f"SELECT {', '.join(_COLUMNS)} FROM {self.qualified} ORDER BY started_at"

    def select_one_sql(self, step_id: str) -> str:
        """Select one step's row (its state and checksum)."""
        return (
            f"SELECT {', '.join(_COLUMNS)} FROM {self.qualified} "
            f"WHERE step_id = {literal(step_id)}"
        )

    def lock_sql(self, wait_seconds: float) -> str:
        """Take the migration lock for the transaction, waiting at most that long."""
        return (
            f"SET LOCAL lock_timeout = {duration_literal(wait_seconds)}; "
            f"SELECT pg_advisory_xact_lock({self.lock_key})"
        )

    def insert_applied_sql(
        self,
        *,
        step_id: str,
        phase: str,
        checksum: str,
        attempts: int,
        progress: dict[str, t.Any] | None = None,
    ) -> str:
        """Record a step as applied; its duration is measured by the server.

        ``statement_timestamp()`` is when the message carrying the step arrived, so
        put this statement in the same message as the step's SQL.
        """
        return (
            f"INSERT INTO {self.qualified} "
            "(step_id, phase, checksum, state, applied_at, started_at, "
            "duration_seconds, attempts, progress) VALUES ("
            f"{literal(step_id)}, {literal(phase)}, {literal(checksum)}, 'applied', "
            "clock_timestamp(), statement_timestamp(), "
            "extract(epoch FROM clock_timestamp() - statement_timestamp()), "
            f"{literal(attempts)}, {literal(progress)})"
        )

    def upsert_applied_sql(
        self, *, step_id: str, phase: str, checksum: str, attempts: int
    ) -> str:
        """Mark a step applied, whether or not it has a row yet (baseline, phases)."""
        return (
            self.insert_applied_sql(
                step_id=step_id, phase=phase, checksum=checksum, attempts=attempts
            )
            + " ON CONFLICT (step_id) DO UPDATE SET state = 'applied', "
            "applied_at = clock_timestamp(), checksum = EXCLUDED.checksum, "
            "attempts = EXCLUDED.attempts, lease_owner = NULL, lease_expires_at = NULL"
        )

    @staticmethod
    def row(values: t.Sequence[t.Any]) -> LedgerRow:
        """Build a :class:`LedgerRow` from a row of :meth:`select_all_sql`."""
        data = dict(zip(_COLUMNS, values, strict=True))
        return LedgerRow(**data)
