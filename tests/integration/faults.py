"""What the fault tests of both drivers share: a client, fault actions, checks.

test_faults.py (psycopg2) and test_faults_psycopg3.py (psycopg 3) reproduce FAULTS.md
Table 1; the driver-neutral parts live here so that each test module keeps only what
differs between the drivers (the exact errors).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import typing as t

import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.disconnects import ErrorKind
from flask_safe_migrate.core.disconnects import classify_error

from .drivers import connect_psycopg
from .services import FaultProxy
from .services import TestDatabase
from .services import connect_psycopg2
from .services import wait_until

SERVER_CLOSED = (
    "server closed the connection unexpectedly\n"
    "\tThis probably means the server terminated abnormally\n"
    "\tbefore or while processing the request."
)
REFUSED = (
    "Connection refused\n"
    "\tIs the server running on that host and accepting TCP/IP connections?"
)
#: A query long enough that finishing it cannot be mistaken for the fault's error,
#: and a bound far below it for "the error came from the fault" on a loaded machine.
LONG_QUERY = "SELECT pg_sleep(60)"
ERROR_WITHIN_SECONDS = 30.0


class Client:
    """One connection, raw or a SQLAlchemy ``Connection``, with one API.

    ``driver`` is ``psycopg2`` or ``psycopg`` (raw), or ``sqlalchemy`` (the URL's
    driver). All run with autocommit off, as an application would: the first
    statement opens a transaction and ``commit()`` ends it.
    """

    def __init__(self, driver: str, url: str) -> None:
        self.driver = driver
        # psycopg2's or psycopg 3's connection: the methods used are the same.
        self.raw: t.Any = None
        self.engine: sa.Engine | None = None
        self.conn: sa.Connection | None = None
        if driver == "psycopg2":
            self.raw = connect_psycopg2(url)
        elif driver == "psycopg":
            self.raw = connect_psycopg(url)
        else:
            self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            self.conn = self.engine.connect()

    def execute(self, sql: str) -> list[tuple[t.Any, ...]]:
        """Run ``sql`` and return its rows (empty when it returns none)."""
        if self.raw is not None:
            with self.raw.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall()) if cur.description is not None else []
        assert self.conn is not None
        result = self.conn.exec_driver_sql(sql)
        return [tuple(row) for row in result.all()] if result.returns_rows else []

    def commit(self) -> None:
        """Commit the open transaction."""
        if self.raw is not None:
            self.raw.commit()
        else:
            assert self.conn is not None
            self.conn.commit()

    def idle(self) -> None:
        """Run a statement and commit, leaving the connection idle (no transaction)."""
        assert self.execute("SELECT 1") == [(1,)]
        self.commit()

    def fail(self, sql: str = "SELECT 1") -> BaseException:
        """Run ``sql`` and return the exception it must raise."""
        with pytest.raises(Exception) as info:  # noqa: PT011 - each caller checks the class
            self.execute(sql)
        return info.value

    def close(self) -> None:
        """Close everything, ignoring errors of a dead connection."""
        if self.raw is not None:
            self.raw.close()
        if self.conn is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                self.conn.close()
        if self.engine is not None:
            self.engine.dispose()


def connect_failure(driver: str, url: str) -> BaseException:
    """Open a connection that must fail, and return the exception."""
    with pytest.raises(Exception) as info:  # noqa: PT011 - each caller checks the class
        _connect_and_close(driver, url)
    return info.value


def _connect_and_close(driver: str, url: str) -> None:
    if driver == "psycopg2":
        connect_psycopg2(url).close()
        return
    if driver == "psycopg":
        connect_psycopg(url).close()
        return
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        engine.connect().close()
    finally:
        engine.dispose()


def dbapi_error(exc: BaseException) -> BaseException:
    """Return the driver's exception behind ``exc``."""
    if isinstance(exc, sa.exc.DBAPIError):
        assert exc.orig is not None
        return exc.orig
    return exc


class Later:
    """An action run in a daemon thread; :meth:`wait` joins it and re-raises."""

    def __init__(self, action: t.Callable[[], object]) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(action,), daemon=True)
        self._thread.start()

    def _run(self, action: t.Callable[[], object]) -> None:
        try:
            action()
        except BaseException as exc:  # surfaced by wait(), in the test's thread
            self.error = exc

    def wait(self) -> None:
        """Join the thread (before the test's database is dropped) and re-raise."""
        self._thread.join(60)
        assert not self._thread.is_alive(), "the fault action did not finish"
        if self.error is not None:
            raise self.error


def run_later(action: t.Callable[[], object]) -> Later:
    """Run ``action`` in a daemon thread; the test calls ``.wait()`` before it ends."""
    return Later(action)


def sleeping_backends(database: TestDatabase) -> int:
    """Count the active ``pg_sleep`` queries in ``database``."""
    count: int = database.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND state = 'active' AND query LIKE 'SELECT pg_sleep%%'"
    )
    return count


def terminate_when_sleeping(database: TestDatabase) -> None:
    """Wait for a ``pg_sleep`` in ``database``, then ``pg_terminate_backend`` it."""
    wait_until(lambda: sleeping_backends(database) > 0, 30, 0.02)
    database.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep%%'"
    )


def kill_when_sleeping(database: TestDatabase, proxy: FaultProxy, mode: str) -> None:
    """Wait for a ``pg_sleep`` in ``database``, then kill every proxy connection."""
    wait_until(lambda: sleeping_backends(database) > 0, 30, 0.02)
    proxy.kill_all(mode)  # type: ignore[arg-type]


def terminate(database: TestDatabase, pid: int) -> None:
    """``pg_terminate_backend(pid)`` and wait until that backend is gone."""
    database.query("SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(
        lambda: (
            not database.query("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
        ),
        5,
    )


def fail_during(
    client: Client, action: t.Callable[[], object], sql: str = LONG_QUERY
) -> BaseException:
    """Run ``action`` in a thread while ``client`` runs ``sql``; return its error.

    The error must come within :data:`ERROR_WITHIN_SECONDS`, far below the query's
    own length: it came from the fault, not from the query finishing.
    """
    fault = run_later(action)
    started = time.monotonic()
    exc = client.fail(sql)
    fault.wait()
    assert time.monotonic() - started < ERROR_WITHIN_SECONDS
    return exc


def check_drop_error(
    exc: BaseException, message: str, cls: type[Exception], prefix: re.Pattern[str]
) -> BaseException:
    """Check the error of a drop in use (not at connect); return the driver's error."""
    orig = dbapi_error(exc)
    assert type(orig) is cls, repr(exc)
    assert message in str(orig)
    assert not prefix.search(str(orig))
    assert classify_error(exc) is ErrorKind.DISCONNECT
    return orig


def check_dead_after_drop(
    client: Client, exc: BaseException, again_cls: type[Exception], again_match: str
) -> None:
    """Check that ``client`` is unusable after the drop ``exc``, and says so alike.

    A raw connection raises ``again_cls`` (matching ``again_match``); SQLAlchemy's
    connection is invalidated and raises ``PendingRollbackError``; both classify as
    a disconnect.
    """
    if client.raw is not None:
        assert exc is dbapi_error(exc)
        with pytest.raises(again_cls, match=again_match) as again:
            client.execute("SELECT 1")
        assert classify_error(again.value) is ErrorKind.DISCONNECT
    else:
        assert isinstance(exc, sa.exc.OperationalError)
        assert exc.connection_invalidated
        with pytest.raises(sa.exc.PendingRollbackError) as again_sa:
            client.execute("SELECT 1")
        assert classify_error(again_sa.value) is ErrorKind.DISCONNECT


def check_connect_failed(
    driver: str,
    exc: BaseException,
    message: str,
    cls: type[Exception],
    prefix: re.Pattern[str],
) -> None:
    """Check a connection that could not be opened: libpq's text after ``prefix``."""
    orig = dbapi_error(exc)
    assert type(orig) is cls, repr(exc)
    assert prefix.search(str(orig)), str(orig)
    assert message in str(orig)
    assert classify_error(exc) is ErrorKind.CONNECT_FAILED
    if driver == "sqlalchemy":
        assert isinstance(exc, sa.exc.OperationalError)
        assert not exc.connection_invalidated
    else:
        assert exc is orig


def check_fatal_at_connect(
    exc: BaseException, message: str, cls: type[Exception], prefix: re.Pattern[str]
) -> None:
    """Check a connect-time failure no retry can fix (wrong password, no TLS)."""
    orig = dbapi_error(exc)
    assert type(orig) is cls
    assert prefix.search(str(orig))
    assert message in str(orig)
    assert classify_error(exc) is ErrorKind.FATAL
