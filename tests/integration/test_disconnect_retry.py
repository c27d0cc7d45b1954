"""execute_with_retry and run_with_retry through TLS PgBouncer under injected faults."""

from __future__ import annotations

import re
import threading
import time
import typing as t

import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.engine import build_migration_engine
from flask_safe_migrate.core.exceptions import RetryExhaustedError
from flask_safe_migrate.core.retry import RetryIf
from flask_safe_migrate.core.retry import default_policy
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.transaction import _retry_predicate
from flask_safe_migrate.core.transaction import execute_with_retry
from flask_safe_migrate.core.transaction import run_with_retry
from flask_safe_migrate.core.transaction import run_with_retry_stats

from .services import PG_PASSWORD
from .services import FaultProxy
from .services import TestDatabase

COUNT_SQL = (
    "INSERT INTO counts (k, n) VALUES ({k}, 1) "
    "ON CONFLICT (k) DO UPDATE SET n = counts.n + 1"
)
_KEY = re.compile(r"VALUES \((\d+), 1\)")


@pytest.fixture
def engine(proxy: FaultProxy, database: TestDatabase) -> t.Iterator[sa.Engine]:
    """The migration engine on each driver, through the fault proxy and PgBouncer."""
    url = proxy.url(database.name)
    engine = build_migration_engine(
        MigrateSettings(database_uri=url, connect_timeout_seconds=3)
    )
    yield engine
    engine.dispose()


@pytest.fixture
def counts(database: TestDatabase) -> TestDatabase:
    """A table whose rows count how often each statement ran."""
    database.query("CREATE TABLE counts (k int PRIMARY KEY, n int NOT NULL)")
    return database


def fast_policy(max_attempts: int = 20) -> t.Any:
    """A retry policy with short backoffs so fault tests stay quick."""
    return default_policy(
        max_attempts=max_attempts,
        backoff_seconds=0.02,
        backoff_max_seconds=0.3,
        max_elapsed_seconds=60,
        retry=RetryIf(_retry_predicate),
    )


def applied_counts(db: TestDatabase) -> dict[int, int]:
    """Map each statement key to how many times it was applied."""
    return {k: n for k, n in db.query("SELECT k, n FROM counts")}


def test_statements_survive_random_kills_exactly_once(
    engine: sa.Engine, counts: TestDatabase, proxy: FaultProxy
) -> None:
    """200 counting upserts under random kills all apply, and none applies twice."""
    proxy.latency_seconds = 0.003
    proxy.chaos(0.05, 0.3)
    failures = 0
    for k in range(200):
        try:
            execute_with_retry(engine, COUNT_SQL.format(k=k), policy=fast_policy())
        except Exception:
            failures += 1
    proxy.chaos_off()
    assert failures == 0
    assert proxy.kills > 10, "the chaos must actually have killed connections"
    result = applied_counts(counts)
    assert sorted(result) == list(range(200))
    assert {k: n for k, n in result.items() if n != 1} == {}


def test_each_lost_commit_reply_is_resolved_without_reapplying(
    engine: sa.Engine, counts: TestDatabase, proxy: FaultProxy
) -> None:
    """With the reply to every COMMIT dropped once, each effect exists exactly once."""

    def key(txn_text: str) -> int | None:
        match = _KEY.search(txn_text)
        return int(match.group(1)) if match else None

    proxy.drop_each_commit_once(key)
    for k in range(20):
        execute_with_retry(engine, COUNT_SQL.format(k=k), policy=fast_policy())
    assert proxy.dropped_commits == 20
    assert applied_counts(counts) == {k: 1 for k in range(20)}


def test_commit_still_in_progress_is_awaited(
    engine: sa.Engine, counts: TestDatabase, proxy: FaultProxy
) -> None:
    """A COMMIT cut off while the server still commits is waited for, not rerun."""
    # A deferred constraint trigger makes COMMIT itself take a second.
    counts.query(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN PERFORM pg_sleep(1); RETURN NULL; END$$;"
        "CREATE CONSTRAINT TRIGGER slow AFTER INSERT OR UPDATE ON counts "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()"
    )

    def kill_during_commit() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            active = counts.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query = 'COMMIT' AND datname = current_database()"
            )
            if active:
                proxy.kill_all()
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_during_commit)
    killer.start()
    _, stats = run_with_retry_stats(
        engine,
        lambda conn: conn.exec_driver_sql(COUNT_SQL.format(k=1)),
        policy=fast_policy(),
    )
    killer.join()
    assert proxy.kills >= 1
    assert stats.attempts >= 2
    assert any("in progress" in e for e in stats.errors), stats.errors
    assert applied_counts(counts) == {1: 1}


def test_aborted_transaction_is_run_again(
    engine: sa.Engine, counts: TestDatabase, proxy: FaultProxy
) -> None:
    """A connection killed before its COMMIT was sent gets the transaction rerun."""
    proxy.kill_before_commit(lambda txn: "VALUES (7, 1)" in txn)
    seen: list[int] = []

    def work(conn: sa.Connection) -> None:
        seen.append(1)
        if len(seen) > 1:
            proxy.drop_commit_reply_off()  # clears any commit rule
        conn.exec_driver_sql(COUNT_SQL.format(k=7))

    run_with_retry(engine, work, policy=fast_policy())
    assert len(seen) == 2
    assert applied_counts(counts) == {7: 1}


def test_round_trips_match_a_plain_transaction(
    engine: sa.Engine, counts: TestDatabase, proxy: FaultProxy
) -> None:
    """Knowing the transaction id costs no round trip over a plain engine.begin()."""
    execute_with_retry(engine, "SELECT 1")  # warm: connect and dialect setup
    proxy.reset_counters()
    execute_with_retry(engine, COUNT_SQL.format(k=1))
    ours = proxy.round_trips
    proxy.reset_counters()
    with engine.begin() as conn:
        conn.exec_driver_sql(COUNT_SQL.format(k=2))
    plain = proxy.round_trips
    # BEGIN + xid, the statement, COMMIT: the same 3 on both drivers, as plain.
    assert ours == plain == 3
    assert applied_counts(counts) == {1: 1, 2: 1}


def test_an_engine_not_built_by_us_works_too(
    proxy: FaultProxy, database: TestDatabase, counts: TestDatabase
) -> None:
    """A plain create_engine() engine: 3 round trips a call, nothing prepared.

    psycopg 3 used to fail every call with ResourceClosedError here (it showed the
    BEGIN's result, not the transaction id), and would prepare from the 6th call.
    """
    engine = sa.create_engine(proxy.url(database.name))
    try:
        execute_with_retry(engine, "SELECT 1")  # warm: connect and dialect setup
        for k in range(8):
            proxy.reset_counters()
            execute_with_retry(engine, COUNT_SQL.format(k=k), policy=fast_policy())
            assert proxy.round_trips == 3
        rows = execute_with_retry(
            engine, "SELECT count(*) FROM pg_prepared_statements", fetch=True
        )
    finally:
        engine.dispose()
    assert rows == [(0,)]
    assert applied_counts(counts) == {k: 1 for k in range(8)}


def test_ambiguous_commit_costs_one_extra_round_trip(
    engine: sa.Engine, counts: TestDatabase, proxy: FaultProxy
) -> None:
    """Resolving a lost COMMIT reply costs exactly one query more than the first try."""
    execute_with_retry(engine, "SELECT 1")
    proxy.reset_counters()
    execute_with_retry(engine, COUNT_SQL.format(k=1), policy=fast_policy())
    clean = proxy.round_trips
    proxy.drop_each_commit_once(lambda txn: "k" if "VALUES (2, 1)" in txn else None)
    proxy.reset_counters()
    execute_with_retry(engine, COUNT_SQL.format(k=2), policy=fast_policy())
    # The lost attempt is a full transaction; the retry is one pg_xact_status query
    # on a fresh connection (no pre-ping on a new connection).
    assert clean == 3  # on both drivers
    assert proxy.round_trips == clean + 1
    assert applied_counts(counts) == {1: 1, 2: 1}


def test_syntax_error_fails_on_first_attempt(
    engine: sa.Engine, database: TestDatabase, proxy: FaultProxy
) -> None:
    """A syntax error is raised at once, unwrapped, after one attempt."""
    proxy.reset_counters()
    with pytest.raises(sa.exc.ProgrammingError) as info:
        execute_with_retry(engine, "SELEC 1", policy=fast_policy())
    assert proxy.connections_opened == 1
    assert "syntax error" in str(info.value.orig)


def test_wrong_password_fails_on_first_attempt(
    proxy: FaultProxy, database: TestDatabase
) -> None:
    """A wrong password is not retried, and the password is not in the message."""
    url = proxy.url(database.name).replace(PG_PASSWORD, "not-the-password")
    engine = build_migration_engine(MigrateSettings(database_uri=url))
    proxy.reset_counters()
    with pytest.raises(sa.exc.OperationalError) as info:
        execute_with_retry(engine, "SELECT 1", policy=fast_policy())
    assert proxy.connections_opened == 1
    assert "authentication failed" in str(info.value)
    assert "not-the-password" not in str(info.value)


def test_refused_connects_are_retried_until_the_pooler_is_back(
    engine: sa.Engine, counts: TestDatabase, proxy: FaultProxy
) -> None:
    """Connects refused for a while are retried with backoff until they succeed."""
    proxy.refuse_connects(0.6)
    execute_with_retry(engine, COUNT_SQL.format(k=3), policy=fast_policy(50))
    assert proxy.refused_connections >= 1
    assert applied_counts(counts) == {3: 1}


def test_retries_are_bounded(proxy: FaultProxy, database: TestDatabase) -> None:
    """When the pooler stays away, the helper gives up after its attempts."""
    engine = build_migration_engine(
        MigrateSettings(database_uri=proxy.url(database.name))
    )
    proxy.refuse_connects(30, mode="close")
    with pytest.raises(RetryExhaustedError) as info:
        execute_with_retry(engine, "SELECT 1", policy=fast_policy(3))
    assert info.value.attempts == 3
    assert "Connection refused" in str(info.value)
    assert isinstance(info.value.__cause__, sa.exc.OperationalError)
