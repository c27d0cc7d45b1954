"""Each fault of FAULTS.md Table 1, reproduced on the real stack and classified.

Pinned to psycopg2 (not run per driver): this module is FAULTS.md's measurement of
psycopg2's own errors, raw and under SQLAlchemy; psycopg 3's are measured by
test_faults_psycopg3.py.
"""

from __future__ import annotations

import re
import signal
import time
import typing as t

import psycopg2
import psycopg2.errors
import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.disconnects import ErrorKind
from flask_safe_migrate.core.disconnects import classify_error
from flask_safe_migrate.core.disconnects import is_retryable

from .drivers import pinned_driver
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
from .services import free_port
from .services import wait_until

DRIVERS = ["psycopg2", "sqlalchemy"]
url_driver = pinned_driver("psycopg2")

EOF_DETECTED = "SSL SYSCALL error: EOF detected"
SSL_CLOSED = "SSL connection has been closed unexpectedly"
CONNECT_PREFIX = re.compile(
    r'^connection to server at "127\.0\.0\.1", port \d+ failed: '
)


@pytest.fixture
def open_client() -> t.Iterator[t.Callable[[str, str], Client]]:
    """Give a factory of Clients that are all closed after the test."""
    clients: list[Client] = []

    def make(driver: str, url: str) -> Client:
        client = Client(driver, url)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.close()


def assert_dropped(client: Client, exc: BaseException, message: str) -> None:
    """Check a connection that dropped while in use, as Table 1 documents it."""
    orig = check_drop_error(exc, message, psycopg2.OperationalError, CONNECT_PREFIX)
    assert getattr(orig, "pgcode", None) is None
    if client.raw is not None:
        assert client.raw.closed == 2
    check_dead_after_drop(
        client, exc, psycopg2.InterfaceError, "connection already closed"
    )


def assert_connect_failed(driver: str, exc: BaseException, message: str) -> None:
    """Check a connection that could not be opened, as Table 1 documents it."""
    check_connect_failed(
        driver, exc, message, psycopg2.OperationalError, CONNECT_PREFIX
    )


@pytest.fixture
def spare_pgbouncer(make_pgbouncer: t.Callable[..., PgBouncer]) -> PgBouncer:
    """Give a PgBouncer of this test's own, free to restart or stop."""
    return make_pgbouncer()


# --------------------------------------------------------------------------- rows 1-7


@pytest.mark.parametrize("driver", DRIVERS)
class TestProxyKills:
    """Rows 1-7: the proxy kills a connection in use."""

    @pytest.mark.parametrize("mode", ["fin", "rst"])
    def test_kill_idle(
        self,
        open_client: t.Any,
        proxy: FaultProxy,
        proxy_url: str,
        driver: str,
        mode: str,
    ) -> None:
        """Rows 1 and 3: an idle connection killed (FIN or RST) fails: EOF detected."""
        client = open_client(driver, proxy_url)
        client.idle()
        assert proxy.kill_all(mode) == 1  # type: ignore[arg-type]
        assert_dropped(client, client.fail(), EOF_DETECTED)

    def test_kill_idle_tls_passthrough(
        self,
        open_client: t.Any,
        pgbouncer: PgBouncer,
        database: TestDatabase,
        driver: str,
    ) -> None:
        """Row 2: the same kill with TLS passed through fails the same way."""
        with FaultProxy(
            "127.0.0.1", pgbouncer.port, terminate_tls=False
        ) as passthrough:
            client = open_client(driver, passthrough.url(database.name))
            client.idle()
            assert passthrough.kill_all("fin") == 1
            assert_dropped(client, client.fail(), EOF_DETECTED)

    def test_kill_in_transaction(
        self, open_client: t.Any, proxy: FaultProxy, proxy_url: str, driver: str
    ) -> None:
        """Row 4: a connection killed idle in transaction fails with EOF detected."""
        client = open_client(driver, proxy_url)
        client.execute("SELECT 1")
        proxy.kill_all("fin")
        assert_dropped(client, client.fail(), EOF_DETECTED)

    @pytest.mark.parametrize(
        ("mode", "message"), [("fin", EOF_DETECTED), ("rst", SERVER_CLOSED)]
    )
    def test_kill_during_query(
        self,
        open_client: t.Any,
        proxy: FaultProxy,
        proxy_url: str,
        database: TestDatabase,
        driver: str,
        mode: str,
        message: str,
    ) -> None:
        """Rows 5 and 6: a kill mid-query errors at once; the query runs on."""
        client = open_client(driver, proxy_url)
        client.idle()
        exc = fail_during(client, lambda: kill_when_sleeping(database, proxy, mode))
        assert_dropped(client, exc, message)
        assert sleeping_backends(database) == 1  # PgBouncer did not cancel it

    def test_ambiguous_commit(
        self,
        open_client: t.Any,
        proxy: FaultProxy,
        proxy_url: str,
        database: TestDatabase,
        driver: str,
    ) -> None:
        """Row 7: a COMMIT whose reply is lost fails like any drop, yet it committed."""
        database.query("CREATE TABLE ledger (id int PRIMARY KEY)")
        client = open_client(driver, proxy_url)
        client.execute("INSERT INTO ledger VALUES (1)")
        proxy.drop_commit_reply(lambda text: "ledger" in text)
        with pytest.raises(Exception) as info:  # noqa: PT011 - checked below
            client.commit()
        assert proxy.dropped_commits == 1
        assert_dropped(client, info.value, EOF_DETECTED)
        assert database.query("SELECT id FROM ledger") == [(1,)]


# ----------------------------------------------------------------- rows 8-11, 15


@pytest.mark.parametrize("driver", DRIVERS)
class TestConnectFailures:
    """Rows 8-11 and 15: a connection that cannot be opened."""

    def test_listener_closed(
        self, proxy: FaultProxy, proxy_url: str, driver: str
    ) -> None:
        """Row 8: a proxy that closed its listener refuses the connection."""
        proxy.refuse_connects(5, "close")
        assert_connect_failed(driver, connect_failure(driver, proxy_url), REFUSED)

    def test_accept_and_reset(
        self, proxy: FaultProxy, proxy_url: str, driver: str
    ) -> None:
        """Row 9: a proxy that accepts and resets fails with server closed."""
        proxy.refuse_connects(5, "rst")
        assert_connect_failed(driver, connect_failure(driver, proxy_url), SERVER_CLOSED)

    def test_nothing_listening(self, database: TestDatabase, driver: str) -> None:
        """Row 10: a port nobody listens on refuses the connection."""
        url = sa.make_url(database.bouncer_url).set(port=free_port())
        exc = connect_failure(driver, url.render_as_string(hide_password=False))
        assert_connect_failed(driver, exc, REFUSED)

    def test_killed_mid_auth(
        self, proxy: FaultProxy, proxy_url: str, driver: str
    ) -> None:
        """Row 11: a connection killed during SCRAM fails with EOF detected."""
        proxy.kill_during_auth()
        assert_connect_failed(driver, connect_failure(driver, proxy_url), EOF_DETECTED)
        assert proxy.kills == 1

    def test_pgbouncer_down(
        self, spare_pgbouncer: PgBouncer, database: TestDatabase, driver: str
    ) -> None:
        """Row 15: connecting while PgBouncer is down is refused."""
        spare_pgbouncer.stop()
        exc = connect_failure(driver, spare_pgbouncer.url(database.name))
        assert_connect_failed(driver, exc, REFUSED)


# --------------------------------------------------------------------------- rows 12-14


@pytest.mark.parametrize("driver", DRIVERS)
class TestPgBouncerRestart:
    """Rows 12-14: PgBouncer restarts under a connected client."""

    @pytest.mark.parametrize(
        ("sig", "in_transaction"),
        [(signal.SIGTERM, False), (signal.SIGTERM, True), (signal.SIGINT, False)],
        ids=["sigterm-idle", "sigterm-in-txn", "sigint-idle"],
    )
    def test_restart(
        self,
        open_client: t.Any,
        spare_pgbouncer: PgBouncer,
        database: TestDatabase,
        driver: str,
        sig: int,
        in_transaction: bool,
    ) -> None:
        """A restart drops the client's connection: EOF detected."""
        client = open_client(driver, spare_pgbouncer.url(database.name))
        if in_transaction:
            client.execute("SELECT 1")
        else:
            client.idle()
        spare_pgbouncer.restart(sig)
        assert_dropped(client, client.fail(), EOF_DETECTED)


# --------------------------------------------------------------------------- rows 16-20


@pytest.mark.parametrize("driver", DRIVERS)
class TestTerminateBackend:
    """Rows 16-20: ``pg_terminate_backend`` of the client's server connection."""

    def test_in_transaction_via_pgbouncer(
        self, open_client: t.Any, database: TestDatabase, driver: str
    ) -> None:
        """Row 16: PgBouncer closes the client: SSL connection closed unexpectedly."""
        client = open_client(driver, database.bouncer_url)
        [(pid,)] = client.execute("SELECT pg_backend_pid()")
        terminate(database, pid)
        assert_dropped(client, client.fail(), SSL_CLOSED)

    def test_during_query_via_pgbouncer(
        self, open_client: t.Any, database: TestDatabase, driver: str
    ) -> None:
        """Row 17: a backend terminated mid-query via PgBouncer errors at once."""
        client = open_client(driver, database.bouncer_url)
        client.idle()
        exc = fail_during(client, lambda: terminate_when_sleeping(database))
        assert_dropped(client, exc, SSL_CLOSED)

    def test_idle_via_pgbouncer_is_invisible(
        self,
        open_client: t.Any,
        pgbouncer: PgBouncer,
        database: TestDatabase,
        driver: str,
    ) -> None:
        """Row 18: killing a server connection idle in PgBouncer's pool goes unseen."""
        client = open_client(driver, database.bouncer_url)
        client.idle()
        database.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )

        def pool_empty() -> bool:
            return not [
                row
                for row in pgbouncer.admin("SHOW SERVERS")
                if row[2] == database.name
            ]

        wait_until(pool_empty, 5)
        assert client.execute("SELECT 1") == [(1,)]
        client.commit()

    def test_in_transaction_direct(
        self, open_client: t.Any, database: TestDatabase, driver: str
    ) -> None:
        """Row 19: direct to PostgreSQL the client sees server closed, no SQLSTATE."""
        client = open_client(driver, database.direct_url)
        [(pid,)] = client.execute("SELECT pg_backend_pid()")
        terminate(database, pid)
        assert_dropped(client, client.fail(), SERVER_CLOSED)

    def test_during_query_direct(
        self, open_client: t.Any, database: TestDatabase, driver: str
    ) -> None:
        """Row 20: a direct backend terminated mid-query errors at once."""
        client = open_client(driver, database.direct_url)
        client.idle()
        exc = fail_during(client, lambda: terminate_when_sleeping(database))
        assert_dropped(client, exc, SERVER_CLOSED)


# --------------------------------------------------------------------------- rows 21-23


@pytest.mark.parametrize("driver", DRIVERS)
class TestTimeouts:
    """Rows 21-23: server and pooler timeouts."""

    def test_statement_timeout(
        self, open_client: t.Any, database: TestDatabase, driver: str
    ) -> None:
        """Row 21: statement_timeout is QueryCanceled 57014 and is not retried."""
        client = open_client(driver, database.bouncer_url)
        client.execute("SET LOCAL statement_timeout = '200ms'")
        exc = client.fail("SELECT pg_sleep(3)")
        orig = dbapi_error(exc)
        assert type(orig) is psycopg2.errors.QueryCanceled
        assert "canceling statement due to statement timeout" in str(orig)
        assert getattr(orig, "pgcode", None) == "57014"
        assert classify_error(exc) is ErrorKind.FATAL
        assert not is_retryable(exc)
        assert_still_connected(client, exc)

    def test_lock_timeout(
        self, open_client: t.Any, database: TestDatabase, driver: str
    ) -> None:
        """Row 22: lock_timeout is LockNotAvailable 55P03, retried as a lock wait."""
        database.query("CREATE TABLE ledger (id int PRIMARY KEY)")
        reader = database.postgres.connect(database.name)
        try:
            reader.autocommit = False
            with reader.cursor() as cur:
                cur.execute("SELECT count(*) FROM ledger")  # holds ACCESS SHARE
            client = open_client(driver, database.bouncer_url)
            client.execute("SET LOCAL lock_timeout = '200ms'")
            exc = client.fail("ALTER TABLE ledger ADD COLUMN note text")
        finally:
            reader.close()
        orig = dbapi_error(exc)
        assert type(orig) is psycopg2.errors.LockNotAvailable
        assert "canceling statement due to lock timeout" in str(orig)
        assert getattr(orig, "pgcode", None) == "55P03"
        assert classify_error(exc) is ErrorKind.LOCK_NOT_AVAILABLE
        assert_still_connected(client, exc)

    def test_query_wait_timeout(
        self,
        open_client: t.Any,
        make_pgbouncer: t.Callable[..., PgBouncer],
        database: TestDatabase,
        driver: str,
    ) -> None:
        """Row 23: PgBouncer's query_wait_timeout closes the client; retryable."""
        bouncer = make_pgbouncer(
            settings={"query_wait_timeout": 1, "default_pool_size": 1}
        )
        url = bouncer.url(database.name)
        holder = open_client("psycopg2", url)
        holder.execute("SELECT 1")  # holds the only server connection
        started = time.monotonic()
        if driver == "psycopg2":
            client = open_client(driver, url)
            exc = client.fail()
            assert client.raw is not None
            assert client.raw.closed == 2
        else:
            # SQLAlchemy's first connect runs queries: the wait hits in connect().
            exc = connect_failure(driver, url)
            assert isinstance(exc, sa.exc.OperationalError)
        assert time.monotonic() - started < 5
        orig = dbapi_error(exc)
        assert type(orig) is psycopg2.OperationalError
        assert SSL_CLOSED in str(orig)
        assert classify_error(exc) in {ErrorKind.DISCONNECT, ErrorKind.CONNECT_FAILED}
        assert is_retryable(exc)


def assert_still_connected(client: Client, exc: BaseException) -> None:
    """Check a statement error that leaves the connection up, its transaction failed."""
    if client.raw is not None:
        assert client.raw.closed == 0
    else:
        assert isinstance(exc, sa.exc.OperationalError)
        assert not exc.connection_invalidated
    again = client.fail()
    assert type(dbapi_error(again)) is psycopg2.errors.InFailedSqlTransaction


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("driver", DRIVERS)
class TestAuthFailures:
    """Connect-time failures that no retry can fix."""

    def test_wrong_password_via_pgbouncer(
        self, pgbouncer: PgBouncer, database: TestDatabase, driver: str
    ) -> None:
        """A wrong password at PgBouncer is SASL authentication failed: fatal."""
        exc = connect_failure(driver, pgbouncer.url(database.name, password="wrong"))
        check_fatal_at_connect(
            exc,
            "FATAL:  SASL authentication failed",
            psycopg2.OperationalError,
            CONNECT_PREFIX,
        )

    def test_wrong_password_direct(self, database: TestDatabase, driver: str) -> None:
        """A wrong password at PostgreSQL is password authentication failed: fatal."""
        url = sa.make_url(database.direct_url).set(password="wrong")
        exc = connect_failure(driver, url.render_as_string(hide_password=False))
        assert "password authentication failed" in str(dbapi_error(exc))
        assert classify_error(exc) is ErrorKind.FATAL

    def test_no_tls_against_pgbouncer(
        self, pgbouncer: PgBouncer, database: TestDatabase, driver: str
    ) -> None:
        """sslmode=disable against PgBouncer is SSL required: fatal."""
        exc = connect_failure(driver, pgbouncer.url(database.name, sslmode="disable"))
        check_fatal_at_connect(
            exc, "FATAL:  SSL required", psycopg2.OperationalError, CONNECT_PREFIX
        )
