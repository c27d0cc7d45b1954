"""The index phase through TLS PgBouncer: INVALID repair, lease, de-duplication.

Builds are made slow on purpose with an index on ``slow_k(k)``, an IMMUTABLE
function that sleeps 5 ms per row and counts its calls in a sequence, so a build
can be interrupted mid-way and the number of builds can be counted.
"""

from __future__ import annotations

import threading
import time
import typing as t

import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.exceptions import StepFailedError
from flask_safe_migrate.core.exceptions import StepRefusedError
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import StepHandle
from flask_safe_migrate.core.steps import StepRegistry

from .services import TestDatabase
from .services import connect_psycopg2
from .test_phase_schema import runner_for
from .test_phase_schema import settings_for

ROWS = 300
INDEX = "items_slow_idx"


def make_slow_table(db: TestDatabase) -> None:
    db.postgres.execute(
        """
        CREATE SEQUENCE build_calls;
        CREATE FUNCTION slow_k(x bigint) RETURNS bigint
            LANGUAGE plpgsql IMMUTABLE AS $$
            BEGIN
                PERFORM pg_sleep(0.005);
                -- PostgreSQL 17 builds indexes with search_path = pg_catalog
                PERFORM nextval('public.build_calls');
                RETURN x;
            END $$;
        CREATE TABLE items (id bigserial PRIMARY KEY, k bigint NOT NULL);
        """
        + f"INSERT INTO items (k) SELECT g FROM generate_series(1, {ROWS}) g;",
        dbname=db.name,
    )


def slow_registry() -> StepRegistry:
    reg = StepRegistry()
    reg.index("0001_items_slow", table="items", columns=["slow_k(k)"], name=INDEX)
    return reg


def index_state(db: TestDatabase, name: str = INDEX) -> tuple[bool, bool] | None:
    """(valid, ready) of the index, or None when it does not exist."""
    rows = db.query(
        "SELECT i.indisvalid, i.indisready FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
        (name,),
    )
    return (rows[0][0], rows[0][1]) if rows else None


def build_calls(db: TestDatabase) -> int:
    return int(
        db.scalar(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM build_calls"
        )
    )


def wait_for_build(db: TestDatabase, timeout: float = 20.0) -> int:
    """Wait until a CREATE INDEX is in progress; return its backend pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = db.scalar(
            "SELECT pid FROM pg_stat_progress_create_index "
            "WHERE phase LIKE 'building index%' LIMIT 1"
        )
        if pid:
            return int(pid)
        time.sleep(0.02)
    raise AssertionError("no index build started")


def terminate(db: TestDatabase, pid: int) -> None:
    assert db.scalar("SELECT pg_terminate_backend(%s)", (pid,)) is True


def test_interrupted_build_leaves_invalid_index_that_the_next_run_rebuilds(
    database: TestDatabase, proxy_url: str, engines: list[sa.Engine]
) -> None:
    make_slow_table(database)
    conn = connect_psycopg2(database.direct_url)
    conn.autocommit = True
    errors: list[BaseException] = []

    def build_by_hand() -> None:
        try:
            conn.cursor().execute(
                f"CREATE INDEX CONCURRENTLY {INDEX} ON items (slow_k(k))"
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=build_by_hand)
    thread.start()
    terminate(database, wait_for_build(database))
    thread.join(timeout=30)
    conn.close()
    assert errors, "the build was not interrupted"
    assert index_state(database) == (False, False) or index_state(database) == (
        False,
        True,
    )

    report = runner_for(settings_for(proxy_url), slow_registry(), engines).run(
        [Phase.INDEX]
    )
    (outcome,) = report.outcomes
    assert outcome.status == "applied"
    assert "dropped an INVALID index" in outcome.detail
    assert index_state(database) == (True, True)
    assert database.query("SELECT state, lease_owner FROM safe_migrate_ledger") == [
        ("applied", None)
    ]


def test_build_killed_under_the_runner_is_rebuilt_and_recorded_only_when_valid(
    database: TestDatabase, proxy_url: str, engines: list[sa.Engine]
) -> None:
    make_slow_table(database)
    seen: list[tuple[t.Any, ...]] = []

    def killer() -> None:
        pid = wait_for_build(database)
        seen.extend(
            database.query("SELECT state, lease_owner FROM safe_migrate_ledger")
        )
        terminate(database, pid)

    thread = threading.Thread(target=killer)
    thread.start()
    report = runner_for(settings_for(proxy_url), slow_registry(), engines).run(
        [Phase.INDEX]
    )
    thread.join(timeout=30)
    # While the index was being built, the step was running under our lease.
    assert len(seen) == 1
    assert seen[0][0] == "running"
    assert seen[0][1]
    (outcome,) = report.outcomes
    assert outcome.status == "applied"
    assert index_state(database) == (True, True)
    assert database.scalar("SELECT state FROM safe_migrate_ledger") == "applied"


def test_two_migrators_at_once_build_the_index_once(
    database: TestDatabase, proxy_url: str, engines: list[sa.Engine]
) -> None:
    make_slow_table(database)
    settings = settings_for(proxy_url)
    runners = [runner_for(settings, slow_registry(), engines) for _ in range(2)]
    statuses: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(index: int) -> None:
        try:
            barrier.wait()
            report = runners[index].run([Phase.INDEX])
            statuses.extend(o.status for o in report.outcomes)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(statuses) == ["applied", "skipped"]
    assert index_state(database) == (True, True)
    # One build evaluates slow_k once per row (and a few more while validating);
    # two builds would evaluate it at least 2 * ROWS times.
    assert ROWS <= build_calls(database) < 2 * ROWS


def test_expired_lease_of_a_dead_migrator_is_taken_over(
    database: TestDatabase, proxy_url: str, engines: list[sa.Engine]
) -> None:
    make_slow_table(database)
    settings = settings_for(proxy_url)
    runner = runner_for(settings, slow_registry(), engines)
    runner.ensure_ledger()
    database.postgres.execute(
        "INSERT INTO safe_migrate_ledger (step_id, phase, checksum, state, "
        "lease_owner, lease_expires_at) VALUES ('0001_items_slow', 'index', 'x', "
        "'running', 'dead-host:1:abc', clock_timestamp() + interval '2 s')",
        dbname=database.name,
    )
    partial = runner.run([Phase.INDEX], max_seconds=0.5)
    assert [o.status for o in partial.outcomes] == ["partial"]
    assert "dead-host:1:abc" in partial.outcomes[0].detail
    assert index_state(database) is None
    report = runner_for(settings, slow_registry(), engines).run([Phase.INDEX])
    assert [o.status for o in report.outcomes] == ["applied"]
    assert database.query(
        "SELECT state, lease_owner, attempts FROM safe_migrate_ledger"
    ) == [("applied", None, 2)]


def make_messages(db: TestDatabase) -> None:
    db.postgres.execute(
        """
        CREATE TABLE messages (id bigserial PRIMARY KEY, provider_msg_id text);
        INSERT INTO messages (provider_msg_id)
        SELECT CASE WHEN g % 25 = 0 THEN NULL
                    ELSE 'msg-' || ((g * 7919) % 1500) END
        FROM generate_series(1, 5000) g;
        """,
        dbname=db.name,
    )


def test_dedup_keep_deletes_exactly_the_duplicates_then_builds_unique(
    database: TestDatabase, proxy_url: str, engines: list[sa.Engine]
) -> None:
    make_messages(database)
    # Computed independently: keep the smallest id of each provider id, and every
    # NULL (a unique index does not treat NULLs as equal).
    expected = {
        r[0]
        for r in database.query(
            "SELECT min(id) FROM messages WHERE provider_msg_id IS NOT NULL "
            "GROUP BY provider_msg_id UNION ALL "
            "SELECT id FROM messages WHERE provider_msg_id IS NULL"
        )
    }
    before = database.scalar("SELECT count(*) FROM messages")
    reg = StepRegistry()
    reg.index(
        "0001_messages_provider_msg_id_key",
        table="messages",
        columns=["provider_msg_id"],
        unique=True,
        where="provider_msg_id IS NOT NULL",
        dedup_keep="min(id)",
    )
    settings = settings_for(proxy_url, backfill_batch_size=300)
    report = runner_for(settings, reg, engines).run([Phase.INDEX])
    (outcome,) = report.outcomes
    assert outcome.status == "applied"
    remaining = {r[0] for r in database.query("SELECT id FROM messages")}
    assert remaining == expected
    assert f"deleted {before - len(expected)} duplicate row(s)" in outcome.detail
    assert index_state(database, "messages_provider_msg_id_key") == (True, True)
    with pytest.raises(Exception, match="duplicate key"):
        database.postgres.execute(
            "INSERT INTO messages (provider_msg_id) VALUES ('msg-1')",
            dbname=database.name,
        )


def test_duplicates_without_dedup_fail_and_leave_no_invalid_index(
    database: TestDatabase, proxy_url: str, engines: list[sa.Engine]
) -> None:
    make_messages(database)
    reg = StepRegistry()
    reg.index(
        "0001_messages_key",
        table="messages",
        columns=["provider_msg_id"],
        unique=True,
    )
    with pytest.raises(StepFailedError, match=r"0001_messages_key.*dedup_keep"):
        runner_for(settings_for(proxy_url), reg, engines).run([Phase.INDEX])
    assert index_state(database, "messages_provider_msg_id_key") is None
    assert database.query("SELECT state FROM safe_migrate_ledger") == [("running",)]
    assert database.scalar("SELECT count(*) FROM messages") == 5000


def test_function_index_step_gets_the_same_repair_and_refuses_blocking_builds(
    database: TestDatabase, proxy_url: str, engines: list[sa.Engine]
) -> None:
    make_slow_table(database)
    reg = StepRegistry()

    @reg.index("0001_custom")
    def custom(m: StepHandle) -> None:
        m.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON items (k)")
        m.execute("ANALYZE items")

    # An INVALID leftover of the same name is repaired first.
    database.postgres.execute(
        f"CREATE INDEX {INDEX} ON items (k); "
        "UPDATE pg_index SET indisvalid = false "
        f"WHERE indexrelid = '{INDEX}'::regclass",
        dbname=database.name,
    )
    report = runner_for(settings_for(proxy_url), reg, engines).run([Phase.INDEX])
    assert [o.status for o in report.outcomes] == ["applied"]
    assert index_state(database) == (True, True)

    blocking = StepRegistry()

    @blocking.index("0002_blocking")
    def blocking_build(m: StepHandle) -> None:
        m.execute("CREATE INDEX items_k2_idx ON items (k)")

    with pytest.raises(StepRefusedError, match=r"0002_blocking.*CONCURRENTLY"):
        runner_for(settings_for(proxy_url), blocking, engines).run([Phase.INDEX])
    assert index_state(database, "items_k2_idx") is None


def test_round_trips_per_index_step(
    database: TestDatabase, proxy: t.Any, engines: list[sa.Engine]
) -> None:
    """Counted at the proxy: a declarative index step costs 5 round trips (claim,
    catalog, build, catalog, finish); a function step's other statement one more."""
    database.postgres.execute(
        "CREATE TABLE items (id bigserial PRIMARY KEY, k bigint, v bigint); "
        "INSERT INTO items (k, v) SELECT g, g FROM generate_series(1, 100) g",
        dbname=database.name,
    )
    reg = StepRegistry()
    reg.index("0001_items_k", table="items", columns=["k"])
    reg.index("0002_items_v", table="items", columns=["v"], unique=True)

    @reg.index("0003_items_kv")
    def build(m: StepHandle) -> None:
        m.execute("CREATE INDEX CONCURRENTLY items_kv ON items (k, v)")
        m.execute("ANALYZE items")

    runner = runner_for(settings_for(proxy.url(database.name)), reg, engines)
    runner.ensure_ledger()  # also pays the engine's first-connect queries
    proxy.reset_counters()
    report = runner.run([Phase.INDEX])
    assert [o.status for o in report.outcomes] == ["applied"] * 3
    assert proxy.round_trips == 1 + 5 + 5 + 6
    assert proxy.connections_opened == 0
    for name in ("items_k_idx", "items_v_key", "items_kv"):
        assert index_state(database, name) == (True, True)
    proxy.reset_counters()
    assert runner.run([Phase.INDEX]).up_to_date
    assert proxy.round_trips == 1
