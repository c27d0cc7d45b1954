"""The schema phase: each step one short transaction under lock_timeout, applied once.

A pending SQL step costs two network messages (round trips):

1. ``BEGIN; SET LOCAL lock_timeout = <advisory wait>; SELECT pg_advisory_xact_lock(K);
   SET LOCAL lock_timeout = <this attempt's>; [SET LOCAL statement_timeout];
   SELECT ... FROM ledger WHERE step_id = ...``
2. ``<the step's SQL>; INSERT INTO ledger ...; COMMIT``

The advisory lock serializes runners (workers booting together), and the ledger row
is re-read under it, so a step whose COMMIT reply was lost is found applied by the
retry instead of being run twice. Nothing is session-scoped: ``SET LOCAL`` and the
xact lock end with the transaction, so this behaves the same through PgBouncer in
transaction mode.
"""

from __future__ import annotations

import logging
import re
import typing as t
from dataclasses import dataclass

import sqlalchemy as sa

from ..disconnects import ErrorKind
from ..disconnects import classify_error
from ..disconnects import describe_error
from ..exceptions import LockNotAcquiredError
from ..exceptions import RetryExhaustedError
from ..exceptions import StepFailedError
from ..exceptions import StepRefusedError
from ..ledger import duration_literal
from ..locking import describe_blockers
from ..retry import lock_retry_schedule
from ..sql import SqlSyntaxError
from ..sql import Statement
from ..sql import StatementKind
from ..sql import split_statements
from ..steps import Step
from ..transaction import _discard
from ..transaction import open_autocommit_or_dispose
from ..transaction import release
from . import PhaseRunner
from . import StepOutcome

__all__ = ["SchemaPhase", "check_schema_sql"]

logger = logging.getLogger(__name__)

_NO_PARAMS = {"no_parameters": True}


def _where(step: Step) -> str:
    return f"step {step.id} ({step.location})"


def check_schema_sql(step: Step, sql: str) -> list[Statement]:
    """Parse ``sql`` of a schema step and refuse what the schema phase must not run.

    Refused: invalid SQL; DML without a declared category; explicit transaction
    control; session settings; concurrent index builds (they cannot run in a
    transaction: use an index step).

    :raises StepRefusedError: naming the step, the statement's line and text.
    """
    try:
        statements = split_statements(sql)
    except SqlSyntaxError as exc:
        line = f" at line {exc.line} of its SQL" if exc.line else ""
        raise StepRefusedError(
            f"{_where(step)}: invalid SQL{line}: {exc.message}"
            + (f": {_shorten(exc.statement)}" if exc.statement else ""),
            step_id=step.id,
            phase=step.phase.value,
        ) from exc
    if not statements:
        raise StepRefusedError(
            f"{_where(step)}: the SQL has no statement",
            step_id=step.id,
            phase=step.phase.value,
        )
    for stmt in statements:
        reason = _refusal(step, stmt)
        if reason:
            raise StepRefusedError(
                f"{_where(step)}, line {stmt.line} of its SQL: "
                f"{_shorten(stmt.sql)}: {reason}",
                step_id=step.id,
                phase=step.phase.value,
            )
    return statements


def _refusal(step: Step, stmt: Statement) -> str | None:
    if stmt.kind is StatementKind.TRANSACTION_CONTROL:
        return (
            "explicit transaction control is not allowed in a step: the runner wraps "
            "each step in its own transaction (with the ledger row), and ending it "
            "early would break exactly-once"
        )
    if stmt.kind is StatementKind.SESSION_SETTING:
        return (
            "a session setting outlives the step and, through a transaction-mode "
            "pooler, leaks into other clients' transactions; use SET LOCAL"
        )
    if stmt.concurrent:
        return (
            "a CONCURRENTLY index build cannot run inside the step's transaction; "
            "register it with migrate.index(...) (the index phase)"
        )
    if (stmt.kind is StatementKind.DML or stmt.dml_kinds) and step.category is None:
        kinds = "/".join(k.upper() for k in stmt.dml_kinds) or "DML"
        return (
            f"{kinds} in a schema step, which runs DDL only; move it to a backfill "
            "step, or declare category= one of dedup_before_unique, seed, "
            "orphan_cleanup, one_time_backfill for a small one-time change"
        )
    return None


def _shorten(sql: str | None, limit: int = 120) -> str:
    text = " ".join((sql or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _AdvisoryLockTimeoutError(Exception):
    """The migration lock was not had within its wait (not retried by the policy)."""


@dataclass
class _Attempts:
    count: int = 0
    commit_maybe_landed: bool = False


class _LiveHandle:
    """The step handle of a function step: checks and sends each statement."""

    def __init__(self, step: Step, conn: sa.Connection) -> None:
        self._step = step
        self._conn = conn

    @property
    def step(self) -> Step:
        return self._step

    @property
    def connection(self) -> sa.Connection:
        """The step's own SQLAlchemy connection, inside the step's transaction.

        For code that drives its own SQL layer on it (an Alembic revision runs
        through Alembic's ``Operations`` here): statements sent on it belong to the
        step's transaction, under its lock and ``SET LOCAL`` timeouts. Never commit,
        roll back or close it; the runner ends the transaction with the ledger row.
        """
        return self._conn

    def execute(
        self, sql: str, params: t.Mapping[str, t.Any] | None = None
    ) -> list[tuple[t.Any, ...]]:
        check_schema_sql(self._step, sql if params is None else _placeholders(sql))
        logger.debug("step %s: %s", self._step.id, sql)
        if params is None:
            result = self._conn.exec_driver_sql(sql, execution_options=_NO_PARAMS)
        else:
            result = self._conn.execute(sa.text(sql), dict(params))
        return [tuple(r) for r in result.fetchall()] if result.returns_rows else []


_BIND = re.compile(r"(?<![:\w]):(\w+)")


def _placeholders(sql: str) -> str:
    """Replace ``:name`` binds by ``$n`` parameters so that pglast can parse the SQL."""
    return _BIND.sub(lambda m: "$1", sql)


class SchemaPhase(PhaseRunner):
    """Apply schema steps, each in one transaction, exactly once."""

    # -- one step --------------------------------------------------------------

    def apply(self, step: Step) -> StepOutcome:
        """Apply ``step`` unless the ledger says it is applied.

        Disconnects retry the whole transaction; ``lock_not_available`` retries with
        a growing lock timeout until ``lock_retry_max_elapsed_seconds``.

        :raises StepRefusedError: the SQL is invalid or not allowed here.
        :raises LockNotAcquiredError: the table (or the migration lock) stayed locked.
        :raises StepFailedError: any other failure; ``__cause__`` has the details.
        """
        statements = check_schema_sql(step, step.sql) if step.sql is not None else []
        settings = self.settings
        policy = self.policy(retry=_is_transient)
        attempts = _Attempts()
        started = self._clock()
        lock_attempt = 0
        while True:
            plan = lock_retry_schedule(
                lock_attempt,
                initial_seconds=settings.lock_timeout_initial_seconds,
                maximum_seconds=settings.lock_timeout_seconds,
                rng=self._rng,
            )
            try:
                outcome, _ = policy.call(
                    self._attempt, step, plan.lock_timeout_seconds, attempts
                )
            except RetryExhaustedError as exc:
                raise StepFailedError(
                    f"{_where(step)}: {exc}", step_id=step.id, phase=step.phase.value
                ) from exc
            except _AdvisoryLockTimeoutError as exc:
                raise LockNotAcquiredError(
                    f"{_where(step)}: another runner held the migration lock for more "
                    f"than {settings.advisory_lock_wait_seconds:g}s "
                    "(SAFE_MIGRATE_ADVISORY_LOCK_WAIT_SECONDS)",
                    key=f"advisory:{self.ledger.lock_key}",
                    waited_seconds=settings.advisory_lock_wait_seconds,
                    step_id=step.id,
                ) from exc.__cause__
            except StepRefusedError:
                raise
            except Exception as exc:
                if classify_error(exc) is not ErrorKind.LOCK_NOT_AVAILABLE:
                    raise StepFailedError(
                        f"{_where(step)} failed: {describe_error(exc)}"
                        + _statement_hint(exc, statements),
                        step_id=step.id,
                        phase=step.phase.value,
                    ) from exc
                waited = self._clock() - started
                if (
                    waited + plan.pause_seconds
                    > settings.lock_retry_max_elapsed_seconds
                ):
                    raise self._lock_gave_up(step, statements, waited) from exc
                logger.warning(
                    "step %s: lock not available within %.2fs (lock attempt %d); "
                    "letting queued queries through for %.2fs",
                    step.id,
                    plan.lock_timeout_seconds,
                    lock_attempt + 1,
                    plan.pause_seconds,
                )
                self._sleep(plan.pause_seconds)
                lock_attempt += 1
                continue
            return outcome

    def _attempt(
        self, step: Step, lock_timeout_seconds: float, attempts: _Attempts
    ) -> StepOutcome:
        attempts.count += 1
        conn = open_autocommit_or_dispose(self.engine)
        t0 = self._clock()
        try:
            try:
                row = conn.exec_driver_sql(
                    self._begin_sql(step, lock_timeout_seconds),
                    execution_options=_NO_PARAMS,
                ).fetchone()
            except Exception as exc:
                if classify_error(exc) is ErrorKind.LOCK_NOT_AVAILABLE:
                    raise _AdvisoryLockTimeoutError() from exc
                raise
            if row is not None:
                return self._found_applied(step, attempts, self._clock() - t0)
            insert = self.ledger.insert_applied_sql(
                step_id=step.id,
                phase=step.phase.value,
                checksum=step.checksum,
                attempts=attempts.count,
            )
            if step.sql is not None:
                message = f"{step.sql}\n;\n{insert};\nCOMMIT"
            else:
                assert step.fn is not None
                step.fn(_LiveHandle(step, conn))
                message = f"{insert};\nCOMMIT"
            try:
                conn.exec_driver_sql(message, execution_options=_NO_PARAMS)
            except Exception as exc:
                if classify_error(exc) in {
                    ErrorKind.DISCONNECT,
                    ErrorKind.CONNECT_FAILED,
                }:
                    attempts.commit_maybe_landed = True
                raise
            logger.info("step %s: applied in %.3fs", step.id, self._clock() - t0)
            return StepOutcome(
                step_id=step.id,
                phase=step.phase.value,
                status="applied",
                attempts=attempts.count,
                duration_seconds=self._clock() - t0,
            )
        except Exception as exc:
            if classify_error(exc) in {ErrorKind.DISCONNECT, ErrorKind.CONNECT_FAILED}:
                _discard(conn, self.engine)
                conn = None  # type: ignore[assignment]  # closed by _discard
            raise
        finally:
            if conn is not None:
                release(conn)

    def _begin_sql(self, step: Step, lock_timeout_seconds: float) -> str:
        parts = [
            "BEGIN",
            self.ledger.lock_sql(self.settings.advisory_lock_wait_seconds),
            f"SET LOCAL lock_timeout = {duration_literal(lock_timeout_seconds)}",
        ]
        if self.settings.statement_timeout_seconds is not None:
            parts.append(
                "SET LOCAL statement_timeout = "
                + duration_literal(self.settings.statement_timeout_seconds)
            )
        parts.append(self.ledger.select_one_sql(step.id))
        return ";\n".join(parts)

    def _found_applied(
        self, step: Step, attempts: _Attempts, elapsed: float
    ) -> StepOutcome:
        if attempts.commit_maybe_landed:
            logger.info(
                "step %s: the reply to its COMMIT was lost; the ledger shows it "
                "applied, so it is not run again",
                step.id,
            )
            return StepOutcome(
                step_id=step.id,
                phase=step.phase.value,
                status="applied",
                attempts=attempts.count,
                duration_seconds=elapsed,
                detail="commit reply lost; confirmed applied in the ledger",
            )
        logger.info("step %s: already applied by another runner", step.id)
        return StepOutcome(
            step_id=step.id,
            phase=step.phase.value,
            status="skipped",
            attempts=attempts.count,
            duration_seconds=elapsed,
            detail="applied by another runner",
        )

    def _lock_gave_up(
        self, step: Step, statements: list[Statement], waited: float
    ) -> LockNotAcquiredError:
        relations = list(dict.fromkeys(r for s in statements for r in s.relations))
        blockers: list[str] = []
        try:
            conn = open_autocommit_or_dispose(self.engine)
            try:
                blockers = describe_blockers(conn, relations)
            finally:
                release(conn)
        except Exception:
            logger.debug("could not list lock holders", exc_info=True)
        for line in blockers:
            logger.warning("step %s: blocked by %s", step.id, line)
        who = f"; blocked by {blockers[0]}" if blockers else ""
        more = f" (and {len(blockers) - 1} more)" if len(blockers) > 1 else ""
        return LockNotAcquiredError(
            f"{_where(step)}: could not lock {', '.join(relations) or 'its tables'} "
            f"within {waited:.1f}s of retries "
            f"(SAFE_MIGRATE_LOCK_RETRY_MAX_ELAPSED_SECONDS){who}{more}",
            key=",".join(relations) or step.id,
            waited_seconds=waited,
            step_id=step.id,
            blockers=blockers,
        )


def _is_transient(exc: BaseException) -> bool:
    return classify_error(exc) in {
        ErrorKind.DISCONNECT,
        ErrorKind.CONNECT_FAILED,
        ErrorKind.CONFLICT,
    }


def _statement_hint(exc: BaseException, statements: list[Statement]) -> str:
    """Name the statement an error points at (by the server's error position)."""
    if not statements:
        return ""
    if len(statements) == 1:
        return f"; statement: {_shorten(statements[0].sql)}"
    orig = getattr(exc, "orig", exc)
    diag = getattr(orig, "diag", None)
    position = getattr(diag, "statement_position", None)
    if position:
        offset = int(position) - 1
        for stmt in statements:
            if stmt.start <= offset < stmt.end + 1:
                return f"; line {stmt.line} of its SQL: {_shorten(stmt.sql)}"
    # Utility statements (ALTER TABLE ...) carry no position: match the names the
    # error quotes (relation "x" does not exist) against the statements.
    names = re.findall(r'"([^"]+)"', str(orig))
    matches = [
        stmt
        for stmt in statements
        if any(n in stmt.relations or n in stmt.sql for n in names)
    ]
    if len(matches) == 1:
        return f"; line {matches[0].line} of its SQL: {_shorten(matches[0].sql)}"
    return f"; in one of its {len(statements)} statements"
