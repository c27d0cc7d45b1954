"""What may differ between poolers and PostgreSQL majors, checked on each combination.

These run in the matrix subset (see matrix.py) on every PostgreSQL major and pooler.
The tests that stop PostgreSQL get a server and pooler of their own, of the run's
combination, so the session's stack is never disturbed.
"""

from __future__ import annotations

import importlib
import threading

import sqlalchemy as sa

from flask_safe_migrate.core.disconnects import ErrorKind
from flask_safe_migrate.core.disconnects import classify_error
from flask_safe_migrate.core.engine import build_migration_engine
from flask_safe_migrate.core.retry import RetryIf
from flask_safe_migrate.core.retry import RetryState
from flask_safe_migrate.core.retry import default_policy
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.transaction import _retry_predicate
from flask_safe_migrate.core.transaction import execute_with_retry

from .conftest import Stack
from .matrix import MATRIX_TESTS
from .matrix import Combination
from .services import TestDatabase
from .services import wait_until
from .test_disconnect_retry import COUNT_SQL


def test_server_down_is_retried_until_it_is_back(own_stack: Stack) -> None:
    """With PostgreSQL stopped behind the pooler, each pooler's error (PgBouncer's
    'cannot connect to server', pgpool-II's 'failed to create a backend 0
    connection', a refused connection) is retried until the server is back, and
    the statement is applied once."""
    server, proxy = own_stack
    server.execute("CREATE TABLE counts (k int PRIMARY KEY, n int NOT NULL)")
    engine = build_migration_engine(
        MigrateSettings(database_uri=proxy.url("postgres"), connect_timeout_seconds=3)
    )
    server.stop("fast")
    kinds: list[ErrorKind] = []

    def record(state: RetryState) -> None:
        assert state.exception is not None
        kinds.append(classify_error(state.exception))

    def start_after_two_failures() -> None:
        wait_until(lambda: len(kinds) >= 2, 60, 0.01, message="two failed attempts")
        server.start()

    restarter = threading.Thread(target=start_after_two_failures, daemon=True)
    restarter.start()
    policy = default_policy(
        max_attempts=200,
        backoff_seconds=0.05,
        backoff_max_seconds=0.3,
        max_elapsed_seconds=90,
        retry=RetryIf(_retry_predicate),
        before_sleep=record,
    )
    try:
        execute_with_retry(engine, COUNT_SQL.format(k=1), policy=policy)
    finally:
        restarter.join(timeout=60)
        engine.dispose()
    assert set(kinds) <= {ErrorKind.CONNECT_FAILED, ErrorKind.DISCONNECT}, kinds
    assert len(kinds) >= 2
    assert server.execute("SELECT k, n FROM counts") == [(1, 1)]


def test_engine_reports_the_selected_major(
    combination: Combination, database: TestDatabase, engines: list[sa.Engine]
) -> None:
    """The run really talks to the PostgreSQL major it was asked for."""
    engine = sa.create_engine(database.bouncer_url)
    engines.append(engine)
    with engine.connect() as conn:
        version = int(conn.exec_driver_sql("SHOW server_version_num").scalar_one())
    assert version // 10000 == combination.major


def test_every_listed_matrix_test_exists() -> None:
    """Each entry of MATRIX_TESTS names a test that is there (a rename would
    silently shrink the subset every other combination runs)."""
    missing = []
    for entry in MATRIX_TESTS:
        path, _, name = entry.partition("::")
        module = importlib.import_module(
            f"tests.integration.{path.removesuffix('.py')}"
        )
        target: object = module
        for part in filter(None, name.split("::")):
            target = getattr(target, part, None)
        if target is None:
            missing.append(entry)
    assert missing == []
