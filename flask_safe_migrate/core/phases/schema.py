"""The schema phase: each step one short transaction under lock_timeout, applied once.

Consecutive pending SQL steps are sent several to one message by
:mod:`.pipeline`; a step sent alone (a function step, or a step that stopped its
message) costs two network messages (round trips):

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

import itertools
import logging
import re
import typing as t
from dataclasses import dataclass

import sqlalchemy as sa

from ..disconnects import ErrorKind
from ..disconnects import classify_error
from ..disconnects import is_disconnect
from ..driver import execute_script
from ..exceptions import LockNotAcquiredError
from ..exceptions import StepRefusedError
from ..ledger import duration_literal
from ..locking import describe_blockers
from ..retry import LockAttempt
from ..retry import lock_retry_schedule
from ..sql import SqlSyntaxError
from ..sql import Statement
from ..sql import StatementKind
from ..sql import split_statements
from ..steps import Step
from ..transaction import execute_on
from . import Executor
from . import LiveHandle
from . import PhaseRunner
from . import Rows
from . import StepOutcome
from . import autocommit
from . import describe_step
from . import is_transient
from . import translate_db_errors

__all__ = ["SchemaPhase", "check_schema_sql", "found_applied"]

logger = logging.getLogger(__name__)


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
            f"{describe_step(step)}: invalid SQL{line}: {exc.message}"
            + (f": {_shorten(exc.statement)}" if exc.statement else ""),
            step_id=step.id,
            phase=step.phase.value,
        ) from exc
    if not statements:
        raise StepRefusedError(
            f"{describe_step(step)}: the SQL has no statement",
            step_id=step.id,
            phase=step.phase.value,
        )
    for stmt in statements:
        reason = _refusal(step, stmt)
        if reason:
            raise StepRefusedError(
                f"{describe_step(step)}, line {stmt.line} of its SQL: "
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


@dataclass
class _Attempts:
    """What the attempts at one step share: how many, whether a COMMIT may have
    landed, and the handle of a function step (for the statement it sent last)."""

    step: Step
    statements: list[Statement]
    count: int = 0
    commit_maybe_landed: bool = False
    handle: LiveHandle | None = None

    def hint(self, exc: BaseException) -> str:
        """Name the statement ``exc`` points at (see :func:`_statement_hint`)."""
        if self.handle is not None and self.handle.last_statement is not None:
            return f"; statement: {_shorten(self.handle.last_statement)}"
        return _statement_hint(exc, self.statements)


def _schema_executor(step: Step, conn: sa.Connection) -> Executor:
    """Check each statement of a function step as schema SQL, then send it."""

    def execute(sql: str, params: t.Mapping[str, t.Any] | None) -> tuple[Rows, int]:
        check_schema_sql(step, sql if params is None else _placeholders(sql))
        return execute_on(conn, sql, params)

    return execute


_BIND = re.compile(r"(?<![:\w]):(\w+)")


def _placeholders(sql: str) -> str:
    """Replace ``:name`` binds by ``$n`` parameters so that pglast can parse the SQL."""
    return _BIND.sub(lambda m: "$1", sql)


class SchemaPhase(PhaseRunner):
    """Apply schema steps, each in one transaction, exactly once."""

    def apply(self, step: Step, *, deadline: float | None = None) -> StepOutcome:
        """Apply ``step`` unless the ledger says it is applied.

        Disconnects retry the whole transaction; ``lock_not_available`` retries with
        a growing lock timeout until ``lock_retry_max_elapsed_seconds``. A schema
        step is one short transaction, so ``deadline`` is not checked inside it
        (the runner checks it between steps).

        :raises StepRefusedError: the SQL is invalid or not allowed here.
        :raises LockNotAcquiredError: the table (or the migration lock) stayed locked.
        :raises StepFailedError: any other failure; ``__cause__`` has the details.
        """
        return self.resume(step)

    def resume(
        self,
        step: Step,
        *,
        attempts: int = 0,
        maybe_landed: bool = False,
        lock_error: Exception | None = None,
    ) -> StepOutcome:
        """Apply ``step`` alone, as :meth:`apply`, after earlier attempts elsewhere.

        The pipeline (:mod:`.pipeline`) hands a step here when its message stopped
        at it, so it is handled exactly as a step that was never pipelined.

        :param attempts: attempts already made (the ledger row counts them all).
        :param maybe_landed: an earlier attempt's message was cut: if the ledger
            has the step, it was applied (by that message), not skipped.
        :param lock_error: the first lock attempt already failed with this error:
            pause as the lock-retry schedule says, then go on with the second.
        """
        statements = check_schema_sql(step, step.sql) if step.sql is not None else []
        state = _Attempts(
            step, statements, count=attempts, commit_maybe_landed=maybe_landed
        )
        policy = self.policy(retry=is_transient)
        started = self._clock()
        first = 0
        with translate_db_errors(step, hint=state.hint):
            if lock_error is not None:
                self._wait_for_lock(state, self.lock_plan(0), 0, started, lock_error)
                first = 1
            for lock_attempt in itertools.count(first):
                plan = self.lock_plan(lock_attempt)
                try:
                    outcome, _ = policy.call(
                        self._attempt, state, plan.lock_timeout_seconds
                    )
                    return outcome
                except Exception as exc:
                    if classify_error(exc) is not ErrorKind.LOCK_NOT_AVAILABLE:
                        raise
                    self._wait_for_lock(state, plan, lock_attempt, started, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def lock_plan(self, lock_attempt: int) -> LockAttempt:
        """The lock timeout of a lock attempt (0-based) and the pause after it."""
        return lock_retry_schedule(
            lock_attempt,
            initial_seconds=self.settings.lock_timeout_initial_seconds,
            maximum_seconds=self.settings.lock_timeout_seconds,
            rng=self._rng,
        )

    def _wait_for_lock(
        self,
        attempts: _Attempts,
        plan: LockAttempt,
        lock_attempt: int,
        started: float,
        exc: Exception,
    ) -> None:
        """Pause so queued queries get through, or give up past the time budget."""
        waited = self._clock() - started
        if waited + plan.pause_seconds > self.settings.lock_retry_max_elapsed_seconds:
            raise self._lock_gave_up(attempts, waited) from exc
        logger.warning(
            "step %s: lock not available within %.2fs (lock attempt %d); "
            "letting queued queries through for %.2fs",
            attempts.step.id,
            plan.lock_timeout_seconds,
            lock_attempt + 1,
            plan.pause_seconds,
        )
        self._sleep(plan.pause_seconds)

    def _attempt(self, attempts: _Attempts, lock_timeout_seconds: float) -> StepOutcome:
        """One transaction: lock, re-read the ledger, run the step, record it."""
        step = attempts.step
        attempts.count += 1
        with autocommit(self.engine) as conn:
            t0 = self._clock()
            if self._begin(conn, step, lock_timeout_seconds) is not None:
                return self._found_applied(attempts, self._clock() - t0)
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
                attempts.handle = LiveHandle(
                    step, _schema_executor(step, conn), connection=conn
                )
                step.fn(attempts.handle)
                message = f"{insert};\nCOMMIT"
            try:
                execute_script(conn, message)
            except Exception as exc:
                if is_disconnect(exc):
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

    def _begin(
        self, conn: sa.Connection, step: Step, lock_timeout_seconds: float
    ) -> t.Any:
        """Open the transaction, take the migration lock, read the step's row.

        :raises LockNotAcquiredError: another runner held the migration lock for
            longer than ``advisory_lock_wait_seconds``.
        """
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
        try:
            return execute_script(conn, ";\n".join(parts)).fetchone()
        except Exception as exc:
            if classify_error(exc) is not ErrorKind.LOCK_NOT_AVAILABLE:
                raise
            raise self.migration_lock_error(step) from exc

    def migration_lock_error(self, step: Step) -> LockNotAcquiredError:
        """The error when another runner held the migration lock too long."""
        wait = self.settings.advisory_lock_wait_seconds
        return LockNotAcquiredError(
            f"{describe_step(step)}: another runner held the migration lock for "
            f"more than {wait:g}s (SAFE_MIGRATE_ADVISORY_LOCK_WAIT_SECONDS)",
            key=f"advisory:{self.ledger.lock_key}",
            waited_seconds=wait,
            step_id=step.id,
        )

    def _found_applied(self, attempts: _Attempts, elapsed: float) -> StepOutcome:
        return found_applied(
            attempts.step,
            attempts=attempts.count,
            maybe_landed=attempts.commit_maybe_landed,
            elapsed=elapsed,
        )

    def _lock_gave_up(self, attempts: _Attempts, waited: float) -> LockNotAcquiredError:
        step = attempts.step
        relations = list(
            dict.fromkeys(r for s in attempts.statements for r in s.relations)
        )
        blockers: list[str] = []
        try:
            with autocommit(self.engine) as conn:
                blockers = describe_blockers(conn, relations)
        except Exception:
            logger.debug("could not list lock holders", exc_info=True)
        for line in blockers:
            logger.warning("step %s: blocked by %s", step.id, line)
        who = f"; blocked by {blockers[0]}" if blockers else ""
        more = f" (and {len(blockers) - 1} more)" if len(blockers) > 1 else ""
        return LockNotAcquiredError(
            f"{describe_step(step)}: could not lock "
            f"{', '.join(relations) or 'its tables'} within {waited:.1f}s of retries "
            f"(SAFE_MIGRATE_LOCK_RETRY_MAX_ELAPSED_SECONDS){who}{more}",
            key=",".join(relations) or step.id,
            waited_seconds=waited,
            step_id=step.id,
            blockers=blockers,
        )


def found_applied(
    step: Step, *, attempts: int, maybe_landed: bool, elapsed: float = 0.0
) -> StepOutcome:
    """The outcome of a step found in the ledger before its SQL ran.

    ``maybe_landed``: an earlier attempt's COMMIT (or message) was cut, so the
    row is that attempt's and the step counts as applied by this run.
    """
    if maybe_landed:
        logger.info(
            "step %s: the reply to its COMMIT was lost; the ledger shows it "
            "applied, so it is not run again",
            step.id,
        )
        status, detail = "applied", "commit reply lost; confirmed applied in the ledger"
    else:
        logger.info("step %s: already applied by another runner", step.id)
        status, detail = "skipped", "applied by another runner"
    return StepOutcome(
        step_id=step.id,
        phase=step.phase.value,
        status=status,
        attempts=attempts,
        duration_seconds=elapsed,
        detail=detail,
    )


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
