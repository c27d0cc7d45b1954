"""run_with_retry, execute_with_retry: whole transactions, exactly once, through drops.

Every attempt opens a fresh connection from the migration engine and sends, in one
message, ``BEGIN; SELECT pg_current_xact_id()``; then the caller's statements; then
``COMMIT``. That is the same number of round trips as a plain ``engine.begin()`` block
(psycopg2 and psycopg 3 both send ``BEGIN`` on its own), so knowing the transaction id
is free. What differs between the drivers is behind :mod:`.driver`.

When the connection drops while the ``COMMIT`` is in flight, the error cannot tell
whether the transaction committed (the reply was lost, or the request was). The next
attempt, on a fresh connection, first asks ``pg_xact_status(xid)``: ``committed`` ends
the call with the result already computed, ``aborted`` runs the transaction again, and
``in progress`` (a pooler may still be finishing it) waits and asks again. That one
extra round trip is paid only after an ambiguous commit.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import typing as t
from dataclasses import dataclass

import sqlalchemy as sa

from .disconnects import ErrorKind
from .disconnects import classify_error
from .disconnects import is_disconnect
from .driver import execute_script
from .driver import in_server_transaction
from .driver import set_autocommit
from .driver import xact_status
from .retry import RetryIf
from .retry import RetryPolicy
from .retry import RetryState
from .retry import RetryStats
from .retry import default_policy
from .retry import log_before_sleep
from .settings import MigrateSettings

__all__ = [
    "CommitInProgressError",
    "autocommit",
    "execute_on",
    "execute_with_retry",
    "open_autocommit",
    "open_autocommit_or_dispose",
    "release",
    "run_with_retry",
    "run_with_retry_stats",
    "send",
    "send_idempotent",
    "settings_policy",
]

logger = logging.getLogger(__name__)

R = t.TypeVar("R")

_BEGIN_XID = "BEGIN; SELECT pg_current_xact_id()::text"


class CommitInProgressError(Exception):
    """The transaction of an ambiguous commit is still running on the server.

    Raised inside the retry loop so that the policy waits and asks again; it is
    classified as retryable by :func:`_retry_predicate`.
    """

    def __init__(self, xid: str) -> None:
        super().__init__(f"transaction {xid} is still in progress on the server")
        self.xid = xid


@dataclass
class _Call(t.Generic[R]):
    """State carried across the attempts of one call."""

    pending_xid: str | None = None  # an ambiguous commit to resolve first
    result: R | None = None
    has_result: bool = False


def open_autocommit(engine: sa.Engine) -> sa.Connection:
    """Check out a connection whose DBAPI connection is in autocommit mode.

    The caller sends ``BEGIN``/``COMMIT`` itself, so it decides what goes in each
    network message. The driver's ``autocommit`` flag is set directly
    (:func:`~flask_safe_migrate.core.driver.set_autocommit`: client-side, no I/O).
    Close it with :func:`release`.
    """
    conn = engine.connect()
    try:
        set_autocommit(conn, True)
    except BaseException:
        conn.invalidate()
        conn.close()
        raise
    return conn


def release(conn: sa.Connection) -> None:
    """Roll back a transaction left open on ``conn``, then return it to the pool.

    In autocommit mode neither the driver nor the pool's reset-on-return knows about
    an explicit ``BEGIN``, so a transaction left open would stay open (and, through
    PgBouncer, pin a server connection). If the ROLLBACK fails, the connection is
    invalidated, never returned to the pool.
    """
    try:
        if in_server_transaction(conn):
            try:
                execute_script(conn, "ROLLBACK")
            except Exception:
                conn.invalidate()
        if not conn.invalidated and not conn.closed:
            set_autocommit(conn, False)
    finally:
        conn.close()


def _retry_predicate(exc: BaseException) -> bool:
    if isinstance(exc, CommitInProgressError):
        return True
    return classify_error(exc) in {
        ErrorKind.DISCONNECT,
        ErrorKind.CONNECT_FAILED,
        ErrorKind.CONFLICT,
        ErrorKind.LOCK_NOT_AVAILABLE,
    }


def _policy(max_retries: int, policy: RetryPolicy | None) -> RetryPolicy:
    if policy is not None:
        return policy
    return default_policy(
        max_attempts=max_retries,
        retry=RetryIf(_retry_predicate),
        before_sleep=log_before_sleep(logger),
    )


def settings_policy(
    settings: MigrateSettings,
    *,
    max_elapsed: bool = True,
    retry: t.Callable[[BaseException], bool] | None = None,
    before_sleep: t.Callable[[RetryState], None] | None = None,
    sleep: t.Callable[[float], None] = time.sleep,
    clock: t.Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> RetryPolicy:
    """Build the disconnect retry policy from the ``SAFE_MIGRATE_RETRY_*`` settings.

    :param max_elapsed: stop after ``retry_max_elapsed_seconds`` too (else only
        after ``retry_max_attempts``).
    :param retry: which exceptions to retry (default: everything a whole
        transaction may be retried for, including a commit still in progress).
    """
    return default_policy(
        max_attempts=settings.retry_max_attempts,
        backoff_seconds=settings.retry_backoff_seconds,
        backoff_max_seconds=settings.retry_backoff_max_seconds,
        max_elapsed_seconds=settings.retry_max_elapsed_seconds if max_elapsed else None,
        retry=RetryIf(retry or _retry_predicate),
        before_sleep=before_sleep or log_before_sleep(logger),
        sleep=sleep,
        clock=clock,
        rng=rng,
    )


def _commit_landed(conn: sa.Connection, xid: str) -> bool:
    """Whether the transaction of a lost COMMIT committed (``pg_xact_status``).

    :raises CommitInProgressError: it is still running; ask again later.
    """
    status = xact_status(conn, xid)
    if status == "committed":
        logger.info(
            "the lost COMMIT of transaction %s did land; not running again", xid
        )
        return True
    if status == "in progress":
        raise CommitInProgressError(xid)
    logger.info(
        "the lost COMMIT of transaction %s did not land (%s); rerunning", xid, status
    )
    return False


def run_with_retry_stats(
    engine: sa.Engine,
    fn: t.Callable[[sa.Connection], R],
    *,
    max_retries: int = 10,
    policy: RetryPolicy | None = None,
) -> tuple[R, RetryStats]:
    """Like :func:`run_with_retry`, and also return the retry statistics."""
    call: _Call[R] = _Call()

    def attempt() -> R:
        with autocommit(engine) as conn:
            if call.pending_xid is not None and _commit_landed(conn, call.pending_xid):
                call.pending_xid = None
                assert call.has_result
                return t.cast(R, call.result)
            call.pending_xid = None
            xid = execute_script(conn, _BEGIN_XID).scalar()
            result = fn(conn)
            call.result, call.has_result = result, True
            try:
                execute_script(conn, "COMMIT")
            except Exception as exc:
                # Dropped: ambiguous, asked on the next attempt. Answered with an
                # error: it did not commit.
                call.pending_xid = t.cast(str, xid) if is_disconnect(exc) else None
                raise
            return result

    return _policy(max_retries, policy).call(attempt)


def open_autocommit_or_dispose(engine: sa.Engine) -> sa.Connection:
    """:func:`open_autocommit`, disposing the engine when the connect fails."""
    try:
        return open_autocommit(engine)
    except Exception as exc:
        if is_disconnect(exc):
            engine.dispose()
        raise


def _discard(conn: sa.Connection, engine: sa.Engine | None) -> None:
    """Throw away a dropped connection and (with ``engine``) every pooled one:
    they may be dead too."""
    try:
        if not conn.invalidated:
            conn.invalidate()
        conn.close()
    except Exception:
        logger.debug("closing a dropped connection failed", exc_info=True)
    if engine is not None:
        engine.dispose()


@contextlib.contextmanager
def autocommit(engine: sa.Engine, *, dispose: bool = True) -> t.Iterator[sa.Connection]:
    """Lend an autocommit connection (see :func:`open_autocommit`) for one block.

    The caller sends ``BEGIN``/``COMMIT`` itself. After the block the connection
    is rolled back if a transaction was left open and returned to the pool; after
    an error that dropped it, it is thrown away and the engine disposed (the other
    pooled connections may be dead too), or only thrown away with
    ``dispose=False`` (a helper thread must not dispose the engine under the
    main one).
    """
    conn = open_autocommit_or_dispose(engine) if dispose else open_autocommit(engine)
    try:
        yield conn
    except Exception as exc:
        if is_disconnect(exc):
            _discard(conn, engine if dispose else None)
        else:
            release(conn)
        raise
    except BaseException:
        release(conn)
        raise
    release(conn)


def execute_on(
    conn: sa.Connection, sql: str, params: t.Mapping[str, t.Any] | None = None
) -> tuple[list[tuple[t.Any, ...]], int]:
    """Execute ``sql`` on ``conn``: as written without ``params`` (``%`` and
    ``:name`` are not placeholders; several statements go in one message), else as
    :func:`sqlalchemy.text` with ``:name`` placeholders.

    :returns: the rows (none when the statement returns none) and the row count of
        the last statement, on either driver.
    """
    if params is None:
        result = execute_script(conn, sql)
    else:
        result = conn.execute(sa.text(sql), dict(params))
    # Before the rows: psycopg 3 forgets the count when the fetch closes the cursor
    # (an UPDATE ... RETURNING then read -1; psycopg2 keeps it).
    rowcount = result.rowcount
    rows = [tuple(r) for r in result.fetchall()] if result.returns_rows else []
    return rows, rowcount


def send(engine: sa.Engine, sql: str) -> list[tuple[t.Any, ...]]:
    """Send ``sql`` as one message on an autocommit connection, once.

    Several statements in the message run as one implicit transaction; the rows of
    the last one are returned. A dropped connection is discarded, not retried.
    """
    with autocommit(engine) as conn:
        rows, _ = execute_on(conn, sql)
    return rows


def send_idempotent(
    engine: sa.Engine, sql: str, policy: RetryPolicy
) -> list[tuple[t.Any, ...]]:
    """:func:`send`, retried whole by ``policy``.

    Only for messages that are safe to run twice: reads, and writes guarded so a
    second run changes nothing (a lost reply is not resolved, the message is sent
    again).
    """
    rows, _ = policy.call(send, engine, sql)
    return rows


def run_with_retry(
    engine: sa.Engine,
    fn: t.Callable[[sa.Connection], R],
    *,
    max_retries: int = 10,
    policy: RetryPolicy | None = None,
) -> R:
    """Run ``fn(connection)`` in one transaction, retried whole until it commits once.

    ``fn`` receives a connection inside an open transaction; it must not commit or
    roll back. Every attempt uses a fresh connection; on a disconnect the engine is
    disposed, the policy sleeps (exponential backoff, full jitter) and the whole
    transaction runs again. A commit whose reply was lost is looked up on the server
    (``pg_xact_status``) before anything runs again, so ``fn``'s effects are never
    committed twice. Errors that retrying cannot fix are raised at once, unchanged.

    :param max_retries: attempts in all (10 by default); unused with ``policy``.
    :param policy: a :class:`~flask_safe_migrate.core.retry.RetryPolicy` to use instead.
    :raises RetryExhaustedError: every attempt failed with a retryable error.
    :returns: what ``fn`` returned (from the attempt that committed).
    """
    result, _ = run_with_retry_stats(engine, fn, max_retries=max_retries, policy=policy)
    return result


@t.overload
def execute_with_retry(
    engine: sa.Engine,
    sql: str,
    params: t.Mapping[str, t.Any] | None = ...,
    *,
    max_retries: int = ...,
    fetch: t.Literal[False] = ...,
    policy: RetryPolicy | None = ...,
) -> int: ...


@t.overload
def execute_with_retry(
    engine: sa.Engine,
    sql: str,
    params: t.Mapping[str, t.Any] | None = ...,
    *,
    max_retries: int = ...,
    fetch: t.Literal[True],
    policy: RetryPolicy | None = ...,
) -> list[sa.Row[t.Any]]: ...


def execute_with_retry(
    engine: sa.Engine,
    sql: str,
    params: t.Mapping[str, t.Any] | None = None,
    *,
    max_retries: int = 10,
    fetch: bool = False,
    policy: RetryPolicy | None = None,
) -> int | list[sa.Row[t.Any]]:
    """Execute one SQL string in its own transaction with :func:`run_with_retry`.

    Without ``params`` the SQL is sent exactly as written (``%`` and ``:name`` are
    not placeholders). With ``params`` it is a :func:`sqlalchemy.text` statement
    with ``:name`` placeholders.

    :param fetch: return the rows instead of the row count.
    :returns: the rows when ``fetch``, else the row count (-1 when unknown).
    """

    def work(conn: sa.Connection) -> int | list[sa.Row[t.Any]]:
        if params is None:
            result = execute_script(conn, sql)
        else:
            result = conn.execute(sa.text(sql), dict(params))
        if fetch:
            return list(result.fetchall()) if result.returns_rows else []
        return result.rowcount

    return run_with_retry(engine, work, max_retries=max_retries, policy=policy)
