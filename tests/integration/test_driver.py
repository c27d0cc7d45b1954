"""core.driver on both drivers: one message, the last result, nothing prepared."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.commands import doctor
from flask_safe_migrate.core.driver import driver_for
from flask_safe_migrate.core.driver import execute_script
from flask_safe_migrate.core.driver import in_server_transaction
from flask_safe_migrate.core.driver import set_autocommit
from flask_safe_migrate.core.driver import ssl_in_use
from flask_safe_migrate.core.driver import xact_status
from flask_safe_migrate.core.engine import build_migration_engine
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.transaction import execute_on

from .services import FaultProxy
from .services import TestDatabase


@pytest.fixture
def engine(proxy: FaultProxy, database: TestDatabase) -> t.Iterator[sa.Engine]:
    """The migration engine on the test's driver, through the proxy and PgBouncer."""
    engine = build_migration_engine(
        MigrateSettings(database_uri=proxy.url(database.name))
    )
    yield engine
    engine.dispose()


@pytest.fixture
def conn(engine: sa.Engine) -> t.Iterator[sa.Connection]:
    """An autocommit connection of ``engine`` (the driver's flag, not SQLAlchemy's)."""
    with engine.connect() as conn:
        set_autocommit(conn, True)
        yield conn
        if in_server_transaction(conn):
            execute_script(conn, "ROLLBACK")
        set_autocommit(conn, False)


def test_script_is_one_round_trip_and_returns_the_last_result(
    conn: sa.Connection, proxy: FaultProxy, url_driver: str
) -> None:
    """BEGIN; SELECT xid in one message: one round trip, the xid comes back."""
    assert driver_for(conn).name == url_driver.partition("+")[2]
    proxy.reset_counters()
    xid = execute_script(conn, "BEGIN; SELECT pg_current_xact_id()::text").scalar()
    assert proxy.round_trips == 1
    assert isinstance(xid, str)
    assert xid.isdigit()
    assert in_server_transaction(conn)
    result = execute_script(conn, "SELECT 1 AS a; SELECT 2 AS b, 3 AS c; COMMIT")
    assert not result.returns_rows  # the COMMIT's result, as psycopg2 shows it
    assert not in_server_transaction(conn)
    assert proxy.round_trips == 2
    assert xact_status(conn, xid) == "committed"
    assert proxy.round_trips == 3


def test_script_rows_and_rowcount_are_the_last_statements(
    conn: sa.Connection, database: TestDatabase
) -> None:
    """The rows and the row count are those of the last statement."""
    database.query("CREATE TABLE t (k int)")
    result = execute_script(conn, "SELECT 1; INSERT INTO t VALUES (1), (2), (3)")
    assert result.rowcount == 3
    rows = execute_script(conn, "INSERT INTO t VALUES (4); SELECT k FROM t ORDER BY k")
    assert rows.fetchall() == [(1,), (2,), (3,), (4,)]


def test_rows_and_rowcount_of_a_statement_with_parameters(
    conn: sa.Connection, database: TestDatabase
) -> None:
    """With parameters too, the rows and the row count (psycopg 3 had forgotten the
    count once the rows were read: a backfill function's batches counted 0)."""
    database.query("CREATE TABLE t (k int); INSERT INTO t VALUES (1), (2), (3)")
    sql = "UPDATE t SET k = k + :add WHERE k > :min RETURNING k"
    rows, rowcount = execute_on(conn, sql, {"add": 10, "min": 1})
    assert sorted(rows) == [(12,), (13,)]
    assert rowcount == 2


def test_an_error_in_a_script_raises_and_stops_it(
    conn: sa.Connection, database: TestDatabase
) -> None:
    """A failing statement raises; nothing of the implicit transaction remains."""
    database.query("CREATE TABLE t (k int PRIMARY KEY)")
    with pytest.raises(sa.exc.IntegrityError):
        execute_script(conn, "INSERT INTO t VALUES (1); INSERT INTO t VALUES (1)")
    assert database.query("SELECT k FROM t") == []


def test_nothing_is_prepared_on_the_server(conn: sa.Connection) -> None:
    """Run 10 times, the same statements are never prepared (psycopg 3 would at 5)."""
    for _ in range(10):
        execute_script(conn, "BEGIN; SELECT pg_current_xact_id()::text")
        conn.exec_driver_sql(
            "SELECT count(*) FROM pg_class WHERE relname = %(n)s", {"n": "x"}
        )
        prepared = execute_script(conn, "SELECT count(*) FROM pg_prepared_statements")
        assert prepared.scalar() == 0
        execute_script(conn, "COMMIT")


def test_xact_status_of_an_aborted_transaction(conn: sa.Connection) -> None:
    """A rolled-back transaction reads as aborted."""
    xid = execute_script(conn, "BEGIN; SELECT pg_current_xact_id()::text").scalar()
    assert isinstance(xid, str)
    execute_script(conn, "ROLLBACK")
    assert xact_status(conn, xid) == "aborted"


def test_tls_is_seen_on_either_driver(conn: sa.Connection) -> None:
    """The proxy terminates TLS: both drivers report it in use."""
    assert ssl_in_use(conn)


def test_doctor_reports_tls_and_the_server_on_either_driver(
    engine: sa.Engine,
) -> None:
    """doctor reads TLS from the driver (psycopg 3 keeps it on ``pgconn``)."""
    settings = MigrateSettings(
        database_uri=engine.url.render_as_string(hide_password=False)
    )
    report = doctor(settings, engine)
    checks = {check.name: check for check in report.checks}
    assert checks["tls"].detail == "TLS in use"
    assert checks["server"].ok, checks["server"].detail
