"""FAULTS.md Table 1 on psycopg 3: the same faults, psycopg 3's errors, classified.

test_faults.py reproduces each row for psycopg2; this module runs the rows whose
error differs on psycopg 3 (raw and under SQLAlchemy's ``postgresql+psycopg``)
and checks the error the classification table in core.disconnects must handle.
psycopg 3 keeps the server's own FATAL message where psycopg2 loses it:
``pg_terminate_backend`` is ``AdminShutdown`` 57P01 and PgBouncer's
``query_wait_timeout`` is ``ProtocolViolation`` 08P01.

Pinned to psycopg 3 (not run per driver): it measures psycopg 3's own errors.
"""

from __future__ import annotations

import re
import signal
import typing as t

import psycopg
import psycopg.errors
import pytest

from flask_safe_migrate.core.disconnects import ErrorKind
from flask_safe_migrate.core.disconnects import classify_error
from flask_safe_migrate.core.disconnects import is_retryable

from .drivers import pinned_driver
from .drivers import with_driver
from .faults import REFUSED
from .faults import SERVER_CLOSED
from .faults import Client
from .faults import check_connect_failed
from .faults import check_dead_after_drop
from .faults import check_drop_error
from .faults import check_fatal_at_connect
from .faults import connect_failure
from .faults import dbapi_error
from .faults import fail_during
from .faults import kill_when_sleeping
from .faults import sleeping_backends
from .faults import terminate
from .faults import terminate_when_sleeping
from .services import FaultProxy
from .services import PgBouncer
from .services import TestDatabase

#: Raw psycopg 3, and SQLAlchemy on it.
DRIVERS = ["psycopg", "sqlalchemy"]
PSYCOPG = "postgresql+psycopg"
url_driver = pinned_driver("psycopg3")

#: Any drop of a TLS connection (libpq 18, OpenSSL 3), after psycopg's prefix.
EOF_WHILE_READING = "consuming input failed: SSL error: unexpected eof while reading"
ADMIN_SHUTDOWN = "terminating connection due to administrator command"
CONNECT_PREFIX = re.compile(
    r'^connection failed: connection to server at "127\.0\.0\.1", port \d+ failed: '
)


@pytest.fixture
def client(driver: str) -> t.Iterator[t.Callable[[str], Client]]:
    """Give a factory of psycopg 3 clients (raw or SQLAlchemy), closed afterwards."""
    made: list[Client] = []

    def make(url: str) -> Client:
        # PgBouncer's own URLs name psycopg2; the fixtures' name the pinned driver.
        made.append(Client(driver, with_driver(url, PSYCOPG)))
        return made[-1]

    yield make
    for one in made:
        one.close()


def fail_to_connect(driver: str, url: str) -> BaseException:
    """Open a psycopg 3 connection that must fail; return the exception."""
    return connect_failure(driver, with_driver(url, PSYCOPG))


def assert_dropped(
    client: Client,
    exc: BaseException,
    message: str,
    cls: type[Exception] = psycopg.OperationalError,
    sqlstate: str | None = None,
) -> None:
    """Check a psycopg 3 connection that dropped while in use."""
    orig = check_drop_error(exc, message, cls, CONNECT_PREFIX)
    assert getattr(orig, "sqlstate", None) == sqlstate
    if client.raw is not None:
        assert client.raw.closed
        assert client.raw.broken
    check_dead_after_drop(
        client, exc, psycopg.OperationalError, "the connection is closed"
    )


def assert_connect_failed(driver: str, exc: BaseException, message: str) -> None:
    """Check a psycopg 3 connection that could not be opened."""
    check_connect_failed(driver, exc, message, psycopg.OperationalError, CONNECT_PREFIX)


@pytest.mark.parametrize("driver", DRIVERS)
class TestDrops:
    """Rows 1-7 and 12-14: the proxy kills a connection, PgBouncer restarts."""

    @pytest.mark.parametrize("mode", ["fin", "rst"])
    def test_kill_idle(
        self, client: t.Any, proxy: FaultProxy, database: TestDatabase, mode: str
    ) -> None:
        """Rows 1 and 3: an idle connection killed: unexpected eof while reading."""
        one = client(proxy.url(database.name))
        one.idle()
        assert proxy.kill_all(mode) == 1  # type: ignore[arg-type]
        assert_dropped(one, one.fail(), EOF_WHILE_READING)

    @pytest.mark.parametrize(
        ("mode", "message"), [("fin", EOF_WHILE_READING), ("rst", SERVER_CLOSED)]
    )
    def test_kill_during_query(
        self,
        client: t.Any,
        proxy: FaultProxy,
        database: TestDatabase,
        mode: str,
        message: str,
    ) -> None:
        """Rows 5 and 6: a kill mid-query errors at once; the query runs on."""
        one = client(proxy.url(database.name))
        one.idle()
        exc = fail_during(one, lambda: kill_when_sleeping(database, proxy, mode))
        assert_dropped(one, exc, message)
        assert sleeping_backends(database) == 1

    def test_ambiguous_commit(
        self, client: t.Any, proxy: FaultProxy, database: TestDatabase
    ) -> None:
        """Row 7: a COMMIT whose reply is lost fails like any drop, yet it committed."""
        database.query("CREATE TABLE ledger (id int PRIMARY KEY)")
        one = client(proxy.url(database.name))
        one.execute("INSERT INTO ledger VALUES (1)")
        proxy.drop_commit_reply(lambda text: "ledger" in text)
        with pytest.raises(Exception) as info:  # noqa: PT011 - checked below
            one.commit()
        assert proxy.dropped_commits == 1
        assert_dropped(one, info.value, EOF_WHILE_READING)
        assert database.query("SELECT id FROM ledger") == [(1,)]

    def test_pgbouncer_restart_in_transaction(
        self,
        client: t.Any,
        make_pgbouncer: t.Callable[..., PgBouncer],
        database: TestDatabase,
    ) -> None:
        """Row 13: a PgBouncer restart under a transaction: unexpected eof."""
        bouncer = make_pgbouncer()
        one = client(bouncer.url(database.name))
        one.execute("SELECT 1")
        bouncer.restart(signal.SIGTERM)
        assert_dropped(one, one.fail(), EOF_WHILE_READING)


@pytest.mark.parametrize("driver", DRIVERS)
class TestConnectFailures:
    """Rows 8, 9 and 11: a connection that cannot be opened."""

    @pytest.mark.parametrize(
        ("mode", "message"), [("close", REFUSED), ("rst", SERVER_CLOSED)]
    )
    def test_refused(
        self,
        proxy: FaultProxy,
        database: TestDatabase,
        driver: str,
        mode: str,
        message: str,
    ) -> None:
        """Rows 8 and 9: refused, or accepted and reset: libpq's text, prefixed."""
        proxy.refuse_connects(5, mode)  # type: ignore[arg-type]
        exc = fail_to_connect(driver, proxy.url(database.name))
        assert_connect_failed(driver, exc, message)

    def test_killed_mid_auth(
        self, proxy: FaultProxy, database: TestDatabase, driver: str
    ) -> None:
        """Row 11: a connection killed during SCRAM: unexpected eof, at connect."""
        proxy.kill_during_auth()
        exc = fail_to_connect(driver, proxy.url(database.name))
        assert_connect_failed(driver, exc, "SSL error: unexpected eof while reading")


@pytest.mark.parametrize("driver", DRIVERS)
class TestServerMessages:
    """Rows 16, 17, 19, 20, 23: psycopg 3 keeps the server's message and SQLSTATE."""

    @pytest.mark.parametrize("path", ["bouncer_url", "direct_url"])
    def test_terminate_in_transaction(
        self, client: t.Any, database: TestDatabase, path: str
    ) -> None:
        """Rows 16 and 19: pg_terminate_backend is AdminShutdown 57P01."""
        one = client(getattr(database, path))
        [(pid,)] = one.execute("SELECT pg_backend_pid()")
        terminate(database, pid)
        exc = one.fail()
        assert_dropped(one, exc, ADMIN_SHUTDOWN, psycopg.errors.AdminShutdown, "57P01")

    @pytest.mark.parametrize("path", ["bouncer_url", "direct_url"])
    def test_terminate_during_query(
        self, client: t.Any, database: TestDatabase, path: str
    ) -> None:
        """Rows 17 and 20: a backend terminated mid-query errors at once."""
        one = client(getattr(database, path))
        one.idle()
        exc = fail_during(one, lambda: terminate_when_sleeping(database))
        assert_dropped(one, exc, ADMIN_SHUTDOWN, psycopg.errors.AdminShutdown, "57P01")

    def test_query_wait_timeout(
        self,
        client: t.Any,
        make_pgbouncer: t.Callable[..., PgBouncer],
        database: TestDatabase,
        driver: str,
    ) -> None:
        """Row 23: query_wait_timeout is ProtocolViolation 08P01, retryable."""
        bouncer = make_pgbouncer(
            settings={"query_wait_timeout": 1, "default_pool_size": 1}
        )
        holder = client(bouncer.url(database.name))
        holder.execute("SELECT 1")  # holds the only server connection
        if driver == "psycopg":
            exc = client(bouncer.url(database.name)).fail()
        else:
            # SQLAlchemy's first connect runs queries: the wait hits in connect().
            exc = fail_to_connect(driver, bouncer.url(database.name))
        orig = dbapi_error(exc)
        assert type(orig) is psycopg.errors.ProtocolViolation
        assert str(orig) == "query_wait_timeout"
        assert orig.sqlstate == "08P01"
        assert classify_error(exc) is ErrorKind.DISCONNECT
        assert is_retryable(exc)


@pytest.mark.parametrize("driver", DRIVERS)
class TestStatementErrors:
    """Rows 21-22 and the auth failures: the same verdicts as on psycopg2."""

    def test_statement_timeout(self, client: t.Any, database: TestDatabase) -> None:
        """Row 21: QueryCanceled 57014, not retried; the connection stays up."""
        one = client(database.bouncer_url)
        one.execute("SET LOCAL statement_timeout = '200ms'")
        exc = one.fail("SELECT pg_sleep(3)")
        orig = dbapi_error(exc)
        assert type(orig) is psycopg.errors.QueryCanceled
        assert orig.sqlstate == "57014"
        assert classify_error(exc) is ErrorKind.FATAL
        assert type(dbapi_error(one.fail())) is psycopg.errors.InFailedSqlTransaction

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"password": "wrong"}, "FATAL:  SASL authentication failed"),
            ({"sslmode": "disable"}, "FATAL:  SSL required"),
        ],
    )
    def test_connect_errors_no_retry_fixes(
        self,
        pgbouncer: PgBouncer,
        database: TestDatabase,
        driver: str,
        change: dict[str, str],
        message: str,
    ) -> None:
        """A wrong password or no TLS at PgBouncer: fatal, as on psycopg2."""
        exc = fail_to_connect(driver, pgbouncer.url(database.name, **change))
        check_fatal_at_connect(exc, message, psycopg.OperationalError, CONNECT_PREFIX)
