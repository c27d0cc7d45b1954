"""Phase runners: the one path every phase runs a step on.

A phase runner applies a step exactly once in its phase's way; what they share is
here: the :class:`StepOutcome` of a step, the :class:`LiveHandle` a function step
gets (the phase decides what a statement may be and how it is sent), the kinds of
error a phase retries (:func:`is_transient`), the one boundary that turns database
errors into :class:`~flask_safe_migrate.core.exceptions.StepFailedError`
(:func:`translate_db_errors`), and :class:`PhaseRunner` with the shared retry
policy. Connections are lent by
:func:`~flask_safe_migrate.core.transaction.autocommit`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import typing as t
from dataclasses import dataclass

import sqlalchemy as sa

from ..disconnects import ErrorKind
from ..disconnects import classify_error
from ..disconnects import describe_error
from ..exceptions import RetryExhaustedError
from ..exceptions import SafeMigrateError
from ..exceptions import StepFailedError
from ..ledger import Ledger
from ..recording import RecordingHandle
from ..retry import RetryPolicy
from ..retry import RetryState
from ..retry import log_before_sleep
from ..settings import MigrateSettings
from ..steps import Step
from ..transaction import autocommit
from ..transaction import execute_on
from ..transaction import send_idempotent
from ..transaction import settings_policy

__all__ = [
    "TRANSIENT_KINDS",
    "Executor",
    "LiveHandle",
    "PhaseRunner",
    "Rows",
    "StepOutcome",
    "autocommit",
    "connection_executor",
    "describe_step",
    "is_transient",
    "translate_db_errors",
]

logger = logging.getLogger(__name__)

#: Errors after which a phase tries the same work again on a fresh connection.
TRANSIENT_KINDS = frozenset(
    {ErrorKind.DISCONNECT, ErrorKind.CONNECT_FAILED, ErrorKind.CONFLICT}
)

Rows = list[tuple[t.Any, ...]]
#: How a phase sends one statement of a function step: the rows and row count.
Executor = t.Callable[[str, t.Mapping[str, t.Any] | None], tuple[Rows, int]]


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is one of :data:`TRANSIENT_KINDS` (retry the whole unit)."""
    return classify_error(exc) in TRANSIENT_KINDS


def describe_step(step: Step) -> str:
    """``step <id> (<file>:<line>)``, how every message names a step."""
    return f"step {step.id} ({step.location})"


@dataclass(frozen=True)
class StepOutcome:
    """What happened to one step in a run.

    ``status`` is ``applied`` (this run applied it), ``skipped`` (another runner
    applied it first), ``planned`` (dry run), or ``partial`` (a backfill stopped by
    its time budget, to be resumed).
    """

    step_id: str
    phase: str
    status: str
    attempts: int = 1
    duration_seconds: float = 0.0
    detail: str = ""


class LiveHandle(RecordingHandle):
    """The handle a function step gets when it runs (a
    :class:`~flask_safe_migrate.core.steps.StepHandle`, and for a backfill a
    :class:`~flask_safe_migrate.core.steps.BackfillHandle`): ``execute`` goes
    through the step's phase, and is recorded (the last statement is named when
    the step fails).

    The phase's executor decides what a statement may be (schema rules, index
    rules) and where it goes (the step's transaction, the index build, the
    batch's transaction). A backfill batch also reads ``after`` (the checkpoint)
    and ``limit`` (the batch size).
    """

    def __init__(
        self,
        step: Step,
        executor: Executor,
        *,
        after: t.Any = None,
        limit: int = 0,
        connection: sa.Connection | None = None,
    ) -> None:
        super().__init__(step, limit=limit)
        self._executor = executor
        self._after = after
        self._connection = connection
        #: Rows the statements changed, as far as the server said.
        self.rowcount = 0

    @property
    def connection(self) -> sa.Connection | None:
        """The step's own SQLAlchemy connection, inside the step's transaction
        (schema steps and backfill batches; None in an index step).

        For code that drives its own SQL layer on it (an Alembic revision runs
        through Alembic's ``Operations`` here): statements sent on it belong to the
        step's transaction, under its lock and ``SET LOCAL`` timeouts. Never commit,
        roll back or close it; the runner ends the transaction with the ledger row.
        """
        return self._connection

    @property
    def after(self) -> t.Any:
        """The checkpoint the last batch returned (None before the first)."""
        return self._after

    @property
    def last_statement(self) -> str | None:
        """The statement sent last, if any."""
        return self.statements[-1] if self.statements else None

    def execute(
        self, sql: str, params: t.Mapping[str, t.Any] | None = None
    ) -> list[tuple[t.Any, ...]]:
        """Send one statement the phase's way; return its rows (if any)."""
        logger.debug("step %s: %s", self.step.id, sql)
        super().execute(sql, params)
        rows, rowcount = self._executor(sql, params)
        self.rowcount += max(0, rowcount)
        return rows


def connection_executor(conn: sa.Connection) -> Executor:
    """An executor that sends each statement on ``conn`` (its open transaction)."""
    return lambda sql, params: execute_on(conn, sql, params)


@contextlib.contextmanager
def translate_db_errors(
    step: Step,
    *,
    doing: str = "",
    hint: t.Callable[[BaseException], str] | None = None,
) -> t.Iterator[None]:
    """Turn a database error (or retries given up) into :class:`StepFailedError`.

    The message names the step, its file:line, what it was doing and, through
    ``hint``, the statement. Errors of this library pass unchanged.

    :param step: the step whose work runs in the block.
    :param doing: what the block does, e.g. ``in the build of users_email_key``.
    :param hint: called with the database error; returns text to append (the
        statement it points at, what to do about it).
    :raises StepFailedError: for any other error, chained to it (``__cause__``).
    """
    try:
        yield
    except RetryExhaustedError as exc:
        raise _failed(step, doing, str(exc), hint, exc) from exc
    except SafeMigrateError:
        raise
    except Exception as exc:
        raise _failed(step, doing, describe_error(exc), hint, exc) from exc


def _failed(
    step: Step,
    doing: str,
    error: str,
    hint: t.Callable[[BaseException], str] | None,
    exc: BaseException,
) -> StepFailedError:
    cause = exc.last_exception if isinstance(exc, RetryExhaustedError) else exc
    context = f" {doing}" if doing else ""
    return StepFailedError(
        f"{describe_step(step)} failed{context}: {error}"
        + (hint(cause) if hint else ""),
        step_id=step.id,
        phase=step.phase.value,
    )


class PhaseRunner:
    """What the phase runners share: settings, engine, ledger, the retry policy."""

    def __init__(
        self,
        settings: MigrateSettings,
        engine: sa.Engine,
        ledger: Ledger,
        *,
        sleep: t.Callable[[float], None] = time.sleep,
        clock: t.Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        before_sleep: t.Callable[[RetryState], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.ledger = ledger
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._before_sleep = before_sleep or log_before_sleep(
            logging.getLogger(type(self).__module__)
        )

    def apply(self, step: Step, *, deadline: float | None = None) -> StepOutcome:
        """Apply ``step`` unless the ledger has it; stop at ``deadline`` if it can."""
        raise NotImplementedError

    def policy(
        self,
        retry: t.Callable[[BaseException], bool] | None = None,
        *,
        max_elapsed: bool = True,
    ) -> RetryPolicy:
        """The retry policy from the settings (``retry``: what to retry).

        :param max_elapsed: also stop after ``retry_max_elapsed_seconds``; off for
            units that may rightly run longer (an index build): attempts only.
        """
        return settings_policy(
            self.settings,
            max_elapsed=max_elapsed,
            retry=retry,
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            clock=self._clock,
            rng=self._rng,
        )

    def query(self, sql: str) -> Rows:
        """Send ``sql`` (safe to run twice: a read, or a guarded write), retried."""
        return send_idempotent(self.engine, sql, self.policy())
