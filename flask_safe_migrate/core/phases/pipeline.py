"""Pipelined schema steps: consecutive SQL steps sent several to one network message.

A run of consecutive pending schema steps given as SQL (not function steps, not
index or backfill steps) goes to the server as one simple-query message, each step
still its own transaction::

    BEGIN;
    SET LOCAL lock_timeout = <advisory wait>;
    DO '<guard>';                 -- migration lock, then: is the step's row there?
    SET LOCAL lock_timeout = <first lock attempt>; [SET LOCAL statement_timeout = ...;]
    <the step's SQL>;
    INSERT INTO <ledger> ...;     -- the ledger row, before the step's COMMIT
    COMMIT;
    BEGIN; ... the next step ...; COMMIT;
    SELECT step_id, duration_seconds FROM <ledger> WHERE step_id IN (...)

PostgreSQL runs such a message statement by statement and stops at the first
error: the steps committed before it stay committed, the failing step's
transaction is rolled back, and nothing after it runs. So a message costs one
round trip, and when it stops early the pipeline reads back which steps committed
(one more message) and then:

- the guard found the step applied by another runner: it is ``skipped``, and the
  rest go on in a new message;
- the guard waited longer than ``advisory_lock_wait_seconds`` for the migration
  lock: :class:`~flask_safe_migrate.core.exceptions.LockNotAcquiredError`, as for a
  step sent alone;
- any other error (``lock_timeout``, a failing statement, a serialization
  failure): the step goes through the single-step path
  (:meth:`~flask_safe_migrate.core.phases.schema.SchemaPhase.resume`), which
  follows the lock-retry schedule (the message was its first lock attempt),
  retries what is transient and raises the error naming the step, its file:line
  and statement. The steps after it resume in new messages once it is applied.

A message that is cut (connection killed, reply lost) is ambiguous: on a fresh
connection the pipeline reads the ledger rows of the batch; the steps found there
are applied (``commit reply lost; confirmed applied in the ledger``), the others
are sent again. A server that still runs the cut message cannot apply a step twice:
each step's guard re-checks the ledger under the migration lock.

When a guard finds its step applied by another runner (workers booting together),
that runner is applying the same steps right now: the pipeline pauses about
``retry_backoff_seconds`` and reads the ledger before sending the rest, instead
of racing it step by step.

How a lock timeout on one step affects the others: the steps before it in the
message are committed and unaffected; the steps after it do not run in that
message and wait (registration order) until the blocked step is applied through
its lock-retry schedule, then resume pipelined; if it gives up, they stay pending.
In a message each lock wait is bounded by the step's first lock attempt's timeout
(``lock_timeout_initial_seconds``) and the first wait that expires ends the
message, so a message holds up the queue of a busy table for at most one such
timeout. The number of steps in one message is bounded so that a message whose
every step waits almost its full first lock timeout still ends within
:data:`MESSAGE_LOCK_BUDGET_SECONDS`, and by :data:`MAX_MESSAGE_BYTES`.

The ledger row's ``attempts`` (and the outcome's) counts the messages that carried
the step up to the one that committed it, without those that stopped before it.
"""

from __future__ import annotations

import logging
import random
import time
import typing as t
from dataclasses import dataclass

import sqlalchemy as sa

from ..disconnects import ErrorKind
from ..disconnects import classify_error
from ..disconnects import error_sqlstate
from ..disconnects import is_disconnect
from ..ledger import ALREADY_APPLIED_SQLSTATE
from ..ledger import LOCK_WAIT_SQLSTATE
from ..ledger import duration_literal
from ..steps import Phase
from ..steps import Step
from ..transaction import execute_on
from . import Rows
from . import StepOutcome
from . import autocommit
from . import translate_db_errors
from .schema import SchemaPhase
from .schema import found_applied

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MESSAGE_LOCK_BUDGET_SECONDS",
    "SchemaPipeline",
    "is_pipelined",
    "send_message",
]

logger = logging.getLogger(__name__)

#: The most bytes of step SQL (and what wraps it) sent in one message.
MAX_MESSAGE_BYTES = 256 * 1024
#: A message holds at most this many seconds of first lock attempts (steps per
#: message = this / ``lock_timeout_initial_seconds``; 50 with the defaults).
MESSAGE_LOCK_BUDGET_SECONDS = 5.0
#: Bytes a step's block adds around its SQL (guard, timeouts, ledger row), about.
_BLOCK_BYTES = 1200

_DROPS = frozenset({ErrorKind.DISCONNECT, ErrorKind.CONNECT_FAILED})
Emit = t.Callable[[StepOutcome], None]


def is_pipelined(step: Step) -> bool:
    """Whether ``step`` can share a message: a schema step given as SQL."""
    return step.phase is Phase.SCHEMA and step.sql is not None


def send_message(conn: sa.Connection, sql: str) -> Rows:
    """Send ``sql``, several statements, as one message; return the last one's rows.

    The one place the pipeline talks to the driver.
    """
    rows, _ = execute_on(conn, sql)
    return rows


def _is_drop(exc: BaseException) -> bool:
    return classify_error(exc) in _DROPS


def _error_detail(exc: BaseException) -> str | None:
    diag = getattr(getattr(exc, "orig", exc), "diag", None)
    return t.cast("str | None", getattr(diag, "message_detail", None))


@dataclass
class _Item:
    """One step of a batch: how many messages carried it, whether one was cut."""

    step: Step
    attempts: int = 0
    maybe_landed: bool = False


@dataclass
class _Stop:
    """A message that stopped at an error, and the steps found applied after it."""

    error: Exception
    applied: dict[str, float]


@dataclass
class _Batch:
    """The steps of one message and how far they got (``settled``: have an outcome)."""

    items: list[_Item]
    settled: int = 0
    #: Read the ledger before the next message (after a cut, or when another
    #: runner is applying these steps).
    read_first: bool = False

    @property
    def open(self) -> list[_Item]:
        """The steps without an outcome yet, in order."""
        return self.items[self.settled :]


class SchemaPipeline:
    """Apply consecutive SQL schema steps several per message, each exactly once."""

    def __init__(
        self,
        phase: SchemaPhase,
        *,
        sleep: t.Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.phase = phase
        self.ledger = phase.ledger
        self.settings = phase.settings
        self._sleep = sleep
        self._rng = rng or random.Random()

    @property
    def first_lock_timeout_seconds(self) -> float:
        """The lock timeout of a step's first attempt (the one in a message)."""
        s = self.settings
        return min(s.lock_timeout_initial_seconds, s.lock_timeout_seconds)

    def steps_per_message(self) -> int:
        """How many steps one message may carry, by the lock schedule."""
        return max(
            1, int(MESSAGE_LOCK_BUDGET_SECONDS / self.first_lock_timeout_seconds)
        )

    def apply(
        self,
        steps: t.Sequence[Step],
        emit: Emit,
        *,
        deadline: float | None = None,
        clock: t.Callable[[], float],
    ) -> int:
        """Apply ``steps`` in order, several per message; ``emit`` each outcome.

        :param steps: consecutive steps for which :func:`is_pipelined` holds.
        :param deadline: do not start a message after it.
        :returns: how many steps got an outcome (fewer than all only at the deadline).
        :raises StepFailedError: a step failed (the steps before it have outcomes).
        :raises LockNotAcquiredError: a lock stayed unavailable past its budget.
        """
        done = 0
        while done < len(steps):
            if deadline is not None and clock() >= deadline:
                break
            batch = _Batch([_Item(s) for s in self._take(steps[done:])])
            self._run(batch, emit)
            done += len(batch.items)
        return done

    def _take(self, steps: t.Sequence[Step]) -> list[Step]:
        limit, size = self.steps_per_message(), 0
        taken: list[Step] = []
        for step in steps:
            cost = len((step.sql or "").encode()) + _BLOCK_BYTES
            if taken and (len(taken) >= limit or size + cost > MAX_MESSAGE_BYTES):
                break
            taken.append(step)
            size += cost
        return taken

    def _run(self, batch: _Batch, emit: Emit) -> None:
        """Send the batch until each step has an outcome (new messages after a stop)."""
        policy = self.phase.policy(retry=_is_drop)
        while batch.open:
            try:
                stop, _ = policy.call(self._attempt, batch, emit)
            except Exception:
                if not batch.open:  # every step settled; the error came after
                    raise
                with translate_db_errors(batch.open[0].step):
                    raise
            if stop is not None:
                self._after_stop(batch, stop, emit)

    def _attempt(self, batch: _Batch, emit: Emit) -> _Stop | None:
        """One connection: after a cut, read back what landed; then send the rest."""
        with autocommit(self.phase.engine) as conn:
            try:
                if batch.read_first:
                    self._settle_landed(batch, self._read_back(conn, batch), emit)
                    batch.read_first = False
                    if not batch.open:
                        return None
                return self._send(conn, batch, emit)
            except Exception as exc:
                if is_disconnect(exc):
                    batch.read_first = True
                    for item in batch.open:
                        item.maybe_landed = True
                raise

    def _send(self, conn: sa.Connection, batch: _Batch, emit: Emit) -> _Stop | None:
        items = batch.open
        for item in items:
            item.attempts += 1
        message = self._message(items)
        logger.debug("sending %d schema steps in one message", len(items))
        try:
            rows = send_message(conn, message)
        except Exception as exc:
            if is_disconnect(exc):
                raise
            readback = self.ledger.applied_among_sql([i.step.id for i in items])
            applied = _durations(send_message(conn, f"ROLLBACK;\n{readback}"))
            return _Stop(exc, applied)
        durations = _durations(rows)
        for item in items:
            self._settle(batch, _applied(item, durations.get(item.step.id, 0.0)), emit)
        return None

    def _message(self, items: list[_Item]) -> str:
        blocks = [self._block(item) for item in items]
        blocks.append(self.ledger.applied_among_sql([i.step.id for i in items]))
        return ";\n".join(blocks)

    def _block(self, item: _Item) -> str:
        """One step's transaction: lock, guard, timeouts, SQL, ledger row, COMMIT."""
        step, s = item.step, self.settings
        timeouts = [
            "SET LOCAL lock_timeout = "
            + duration_literal(self.first_lock_timeout_seconds)
        ]
        if s.statement_timeout_seconds is not None:
            timeouts.append(
                "SET LOCAL statement_timeout = "
                + duration_literal(s.statement_timeout_seconds)
            )
        insert = self.ledger.insert_applied_sql(
            step_id=step.id,
            phase=step.phase.value,
            checksum=step.checksum,
            attempts=item.attempts,
            started="transaction_timestamp()",
        )
        return ";\n".join(
            [
                "BEGIN",
                "SET LOCAL lock_timeout = "
                + duration_literal(s.advisory_lock_wait_seconds),
                self.ledger.guard_sql(step.id),
                *timeouts,
                f"{step.sql}\n",
                insert,
                "COMMIT",
            ]
        )

    def _read_back(self, conn: sa.Connection, batch: _Batch) -> dict[str, float]:
        ids = [i.step.id for i in batch.open]
        return _durations(send_message(conn, self.ledger.applied_among_sql(ids)))

    def _settle(self, batch: _Batch, outcome: StepOutcome, emit: Emit) -> None:
        batch.settled += 1
        emit(outcome)

    def _settle_landed(
        self, batch: _Batch, applied: dict[str, float], emit: Emit
    ) -> None:
        """Give the leading steps found in the ledger their outcome."""
        for item in batch.open:
            if item.step.id not in applied:
                return
            outcome = found_applied(
                item.step, attempts=item.attempts, maybe_landed=item.maybe_landed
            )
            self._settle(batch, outcome, emit)

    def _after_stop(self, batch: _Batch, stop: _Stop, emit: Emit) -> None:
        """The steps before the failing one committed; handle the failing one."""
        state = error_sqlstate(stop.error)
        guarded = state in (LOCK_WAIT_SQLSTATE, ALREADY_APPLIED_SQLSTATE)
        failing = _error_detail(stop.error) if guarded else None
        for item in batch.open:
            if item.step.id == failing or item.step.id not in stop.applied:
                break
            self._settle(batch, _applied(item, stop.applied[item.step.id]), emit)
        if not batch.open:
            return
        item = batch.open[0]
        for later in batch.open[1:]:
            later.attempts -= 1  # the message stopped before it: not an attempt
        if state == LOCK_WAIT_SQLSTATE:
            raise self.phase.migration_lock_error(item.step) from stop.error
        if state == ALREADY_APPLIED_SQLSTATE:
            outcome = found_applied(
                item.step, attempts=item.attempts, maybe_landed=item.maybe_landed
            )
            self._make_way(batch)
        else:
            locked = classify_error(stop.error) is ErrorKind.LOCK_NOT_AVAILABLE
            logger.info(
                "step %s stopped its message (%s); applying it alone",
                item.step.id,
                state,
            )
            outcome = self.phase.resume(
                item.step,
                attempts=item.attempts,
                maybe_landed=item.maybe_landed,
                lock_error=stop.error if locked else None,
            )
        self._settle(batch, outcome, emit)

    def _make_way(self, batch: _Batch) -> None:
        """Another runner is applying these steps: let it get ahead, then read the
        ledger before sending the rest (racing it step by step would cost both of
        us a message per step)."""
        batch.read_first = True
        self._sleep(self.settings.retry_backoff_seconds * self._rng.uniform(0.5, 1.5))


def _applied(item: _Item, duration: float) -> StepOutcome:
    logger.info("step %s: applied in %.3fs", item.step.id, duration)
    return StepOutcome(
        step_id=item.step.id,
        phase=item.step.phase.value,
        status="applied",
        attempts=item.attempts,
        duration_seconds=duration,
    )


def _durations(rows: Rows) -> dict[str, float]:
    return {str(r[0]): float(r[1] or 0.0) for r in rows}
