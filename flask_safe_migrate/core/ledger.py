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

__all__ = [
    "ALREADY_APPLIED_SQLSTATE",
    "LOCK_WAIT_SQLSTATE",
    "Ledger",
    "LedgerRow",
    "duration_literal",
    "literal",
    "quote_ident",
]

#: SQLSTATE raised by :meth:`Ledger.guard_sql` when the migration lock stayed taken.
LOCK_WAIT_SQLSTATE = "SM001"
#: SQLSTATE raised by :meth:`Ledger.guard_sql` when the step's row is there.
ALREADY_APPLIED_SQLSTATE = "SM002"

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
    #: The step's text checksum (no parsing to compare): ``""`` when the row has
    #: none yet, None when the ledger predates the ``text_checksum`` column.
    text_checksum: str | None = None

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
        #: Whether the ledger has the ``text_checksum`` column, so that the rows
        #: written record it (set by the runner once it knows; a ledger created by
        #: an older version gets it in :meth:`create_sql`).
        self.records_text_checksum = False

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
            "    lease_expires_at timestamptz,\n"
            "    text_checksum text\n"
            f");\nALTER TABLE {self.qualified} "
            "ADD COLUMN IF NOT EXISTS text_checksum text"
        )

    def record_text_checksums_sql(
        self, checksums: t.Mapping[str, tuple[str, str]]
    ) -> str:
        """Record the text checksum of applied rows whose checksum still matches.

        :param checksums: step id to ``(checksum, text_checksum)``.
        """
        values = ", ".join(
            f"({literal(i)}, {literal(c)}, {literal(x)})"
            for i, (c, x) in checksums.items()
        )
        return (
            f"UPDATE {self.qualified} AS l SET text_checksum = v.x FROM (VALUES "
            f"{values}) AS v (i, c, x) WHERE l.step_id = v.i AND l.checksum = v.c "
            "AND l.state = 'applied'"
        )

    def select_all_sql(self) -> str:
        """The one query of the fast path: every row, with its text checksum (``""``
        when unset, NULL when the ledger has no such column: read through
        ``to_jsonb`` so that a ledger of an older version reads the same)."""
        return (
            f"SELECT {', '.join(_COLUMNS)}, coalesce(to_jsonb(l)->>'text_checksum', "
            "CASE WHEN to_jsonb(l) ? 'text_checksum' THEN '' END) "
            f"FROM {self.qualified} AS l ORDER BY started_at"
        )

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

    def guard_sql(self, step_id: str) -> str:
        """A ``DO`` statement: take the migration lock (within the ``lock_timeout``
        in force), then check that the step has no row.

        It raises :data:`LOCK_WAIT_SQLSTATE` when the lock stayed taken and
        :data:`ALREADY_APPLIED_SQLSTATE` when another runner applied the step; both
        carry the step id as their DETAIL. In a message of several transactions
        the error ends the message there, so the step's SQL never runs twice.
        """
        sid = literal(step_id)
        body = (
            f"BEGIN\n  BEGIN\n    PERFORM pg_advisory_xact_lock({self.lock_key});\n"
            "  EXCEPTION WHEN lock_not_available THEN\n"
            "    RAISE EXCEPTION 'flask-safe-migrate: the migration lock stayed "
            f"taken' USING ERRCODE = '{LOCK_WAIT_SQLSTATE}', DETAIL = {sid};\n"
            "  END;\n"
            f"  IF EXISTS (SELECT FROM {self.qualified} WHERE step_id = {sid}) THEN\n"
            "    RAISE EXCEPTION 'flask-safe-migrate: step already applied' USING "
            f"ERRCODE = '{ALREADY_APPLIED_SQLSTATE}', DETAIL = {sid};\n"
            "  END IF;\nEND"
        )
        return f"DO {literal(body)}"

    def applied_among_sql(self, step_ids: t.Sequence[str]) -> str:
        """Select ``step_id, duration_seconds`` of the applied ones of ``step_ids``."""
        ids = ", ".join(literal(i) for i in step_ids)
        return (
            f"SELECT step_id, duration_seconds FROM {self.qualified} "
            f"WHERE state = 'applied' AND step_id IN ({ids})"
        )

    def insert_applied_sql(
        self,
        *,
        step_id: str,
        phase: str,
        checksum: str,
        attempts: int,
        progress: dict[str, t.Any] | None = None,
        text_checksum: str | None = None,
        started: str = "statement_timestamp()",
    ) -> str:
        """Record a step as applied; its duration is measured by the server.

        ``statement_timestamp()`` is when the message carrying the step arrived, so
        put this statement in the same message as the step's SQL; with several
        steps in one message, pass ``started="transaction_timestamp()"``.
        """
        column, value, _ = self._text_column(text_checksum)
        return (
            f"INSERT INTO {self.qualified} "
            "(step_id, phase, checksum, state, applied_at, started_at, "
            f"duration_seconds, attempts, progress{column}) VALUES ("
            f"{literal(step_id)}, {literal(phase)}, {literal(checksum)}, 'applied', "
            f"clock_timestamp(), {started}, "
            f"extract(epoch FROM clock_timestamp() - {started}), "
            f"{literal(attempts)}, {literal(progress)}{value})"
        )

    def upsert_applied_sql(
        self,
        *,
        step_id: str,
        phase: str,
        checksum: str,
        attempts: int,
        text_checksum: str | None = None,
    ) -> str:
        """Mark a step applied, whether or not it has a row yet (baseline, phases)."""
        return (
            self.insert_applied_sql(
                step_id=step_id,
                phase=phase,
                checksum=checksum,
                attempts=attempts,
                text_checksum=text_checksum,
            )
            + " ON CONFLICT (step_id) DO UPDATE SET state = 'applied', "
            "applied_at = clock_timestamp(), checksum = EXCLUDED.checksum, "
            "attempts = EXCLUDED.attempts, lease_owner = NULL, lease_expires_at = NULL"
            + self._text_column(text_checksum)[2]
        )

    # -- leases (index steps) ----------------------------------------------------

    def claim_lease_sql(
        self,
        step_id: str,
        *,
        phase: str,
        checksum: str,
        owner: str,
        seconds: float,
        text_checksum: str | None = None,
    ) -> str:
        """Claim a step's lease for ``owner`` unless someone else holds a live one.

        One row: claimed (1 or 0), the step's state, the lease's owner, and the
        seconds left on it.
        """
        q, sid = self.qualified, literal(step_id)
        column, value, update = self._text_column(text_checksum)
        return (
            f"WITH claim AS (INSERT INTO {q} AS l (step_id, phase, checksum, state, "
            f"attempts, lease_owner, lease_expires_at{column}) VALUES "
            f"({sid}, {literal(phase)}, {literal(checksum)}, 'running', 1, "
            f"{literal(owner)}, clock_timestamp() + {_interval(seconds)}{value}) "
            "ON CONFLICT (step_id) DO UPDATE SET lease_owner = EXCLUDED.lease_owner, "
            "lease_expires_at = EXCLUDED.lease_expires_at, "
            f"checksum = EXCLUDED.checksum{update}, "
            "attempts = l.attempts + (l.lease_owner IS DISTINCT FROM "
            "EXCLUDED.lease_owner)::int "
            "WHERE l.state <> 'applied' AND (l.lease_owner IS NULL OR "
            "l.lease_owner = EXCLUDED.lease_owner OR "
            "l.lease_expires_at < clock_timestamp()) RETURNING 1) "
            "SELECT (SELECT count(*) FROM claim), "
            f"(SELECT state FROM {q} WHERE step_id = {sid}), "
            f"(SELECT lease_owner FROM {q} WHERE step_id = {sid}), "
            "(SELECT extract(epoch FROM lease_expires_at - clock_timestamp()) "
            f"FROM {q} WHERE step_id = {sid})"
        )

    def renew_lease_sql(self, step_id: str, *, owner: str, seconds: float) -> str:
        """Extend ``owner``'s lease; returns a row only while ``owner`` holds it."""
        return (
            f"UPDATE {self.qualified} SET lease_expires_at = "
            f"clock_timestamp() + {_interval(seconds)} "
            f"WHERE step_id = {literal(step_id)} AND lease_owner = "
            f"{literal(owner)} RETURNING 1"
        )

    def release_lease_sql(self, step_id: str, *, owner: str) -> str:
        """Give up ``owner``'s lease of a step that is not applied."""
        return (
            f"UPDATE {self.qualified} SET lease_owner = NULL, "
            f"lease_expires_at = NULL WHERE step_id = {literal(step_id)} "
            f"AND lease_owner = {literal(owner)} AND state <> 'applied'"
        )

    def finish_sql(self, step_id: str, *, seconds: float) -> str:
        """Mark a ``running`` step applied (its lease ends), unless it already is."""
        return (
            f"UPDATE {self.qualified} SET state = 'applied', "
            "applied_at = clock_timestamp(), lease_owner = NULL, "
            f"lease_expires_at = NULL, duration_seconds = {literal(float(seconds))} "
            f"WHERE step_id = {literal(step_id)} AND state <> 'applied'"
        )

    # -- checkpoints (backfill steps) --------------------------------------------

    def start_sql(
        self,
        step_id: str,
        *,
        phase: str,
        checksum: str,
        progress: dict[str, t.Any],
        text_checksum: str | None = None,
    ) -> str:
        """Create a step's ``running`` row with ``progress``, or count one more
        attempt on the row that is there (unless it is applied)."""
        column, value, update = self._text_column(text_checksum)
        return (
            f"INSERT INTO {self.qualified} AS l (step_id, phase, checksum, state, "
            f"attempts, progress{column}) VALUES ({literal(step_id)}, "
            f"{literal(phase)}, {literal(checksum)}, 'running', 1, "
            f"{literal(progress)}{value}) "
            "ON CONFLICT (step_id) DO UPDATE SET attempts = l.attempts + 1, "
            f"checksum = EXCLUDED.checksum{update} WHERE l.state <> 'applied'"
        )

    def progress_sql(
        self, step_id: str, *, columns: t.Sequence[str] = (), lock: bool = False
    ) -> str:
        """Select a step's ``state, progress`` (then ``columns``), ``FOR UPDATE``
        with ``lock``."""
        extra = "".join(f", {c}" for c in columns)
        return (
            f"SELECT state, progress{extra} FROM {self.qualified} "
            f"WHERE step_id = {literal(step_id)}" + (" FOR UPDATE" if lock else "")
        )

    def checkpoint_sql(
        self, step_id: str, *, state: str, progress: dict[str, t.Any], seconds: float
    ) -> str:
        """Write a step's checkpoint and state, adding ``seconds`` to its duration.

        :raises TypeError: ``progress`` is not JSON.
        """
        applied_at = "clock_timestamp()" if state == "applied" else "NULL"
        return (
            f"UPDATE {self.qualified} SET progress = {literal(progress)}, "
            f"state = {literal(state)}, applied_at = {applied_at}, "
            "duration_seconds = coalesce(duration_seconds, 0) + "
            f"{literal(float(seconds))} WHERE step_id = {literal(step_id)}"
        )

    def lock_checkpoint_sql(self, step_id: str, *, batches: int, into: str) -> str:
        """PL/pgSQL: lock a running step's row if it has recorded ``batches``
        batches, and read its checkpoint (text), last batch size, last batch
        seconds and key spread (key values per key in the last batch, NULL when
        unknown) into the variables ``into`` (four, comma-separated); ``FOUND``
        says whether it was locked."""
        return (
            "SELECT progress->>'last', (progress->>'batch_size')::bigint, "
            "(progress->>'last_batch_seconds')::float8, "
            f"(progress->>'spread')::float8 INTO {into} "
            f"FROM {self.qualified} "
            f"WHERE step_id = {literal(step_id)} AND state = 'running' AND "
            f"coalesce((progress->>'batches')::bigint, 0) = {int(batches)} FOR UPDATE"
        )

    def advance_checkpoint_sql(
        self,
        step_id: str,
        *,
        last: str,
        keys: str,
        rows: str,
        seconds: str,
        batch_size: int | str,
        extra: t.Mapping[str, str] | None = None,
        done: str | None = None,
    ) -> str:
        """Record one batch: SQL expressions for its last key (NULL: nothing was
        left), keys covered, rows updated, seconds, its size (a number or an
        expression), and whether the step is now applied (by default when
        nothing was left)."""
        fields = "".join(f"{literal(k)}, {v}, " for k, v in (extra or {}).items())
        done = done or f"{last} IS NULL"
        return (
            f"UPDATE {self.qualified} SET progress = progress || jsonb_build_object("
            f"'last', coalesce({last}::text, progress->>'last'), "
            f"'updated', coalesce((progress->>'updated')::bigint, 0) + {rows}, "
            f"'scanned', coalesce((progress->>'scanned')::bigint, 0) + {keys}, "
            f"{fields}'batches', coalesce((progress->>'batches')::bigint, 0) + 1, "
            f"'batch_size', {batch_size}, 'last_batch_seconds', {seconds}, "
            "'max_batch_seconds', greatest(coalesce((progress->>"
            f"'max_batch_seconds')::float8, 0), {seconds})), "
            f"state = CASE WHEN {done} THEN 'applied' ELSE 'running' END, "
            f"applied_at = CASE WHEN {done} THEN clock_timestamp() END, "
            f"duration_seconds = coalesce(duration_seconds, 0) + {seconds} "
            f"WHERE step_id = {literal(step_id)}"
        )

    @staticmethod
    def row(values: t.Sequence[t.Any]) -> LedgerRow:
        """Build a :class:`LedgerRow` from a row of :meth:`select_all_sql` (or of
        :meth:`select_one_sql`, without the text checksum)."""
        data = dict(zip(_COLUMNS, values[: len(_COLUMNS)], strict=True))
        extra = values[len(_COLUMNS) :]
        return LedgerRow(**data, text_checksum=extra[0] if extra else None)

    def _text_column(self, text_checksum: str | None) -> tuple[str, str, str]:
        """The column, value and ON CONFLICT update that record a text checksum,
        or empty strings when the ledger has no such column or there is none."""
        if not self.records_text_checksum or text_checksum is None:
            return "", "", ""
        return (
            ", text_checksum",
            f", {literal(text_checksum)}",
            ", text_checksum = EXCLUDED.text_checksum",
        )


def _interval(seconds: float) -> str:
    return f"{duration_literal(seconds)}::interval"
