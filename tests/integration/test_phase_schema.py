"""The schema phase through TLS PgBouncer: every step exactly once, through faults."""

from __future__ import annotations

import re
import subprocess
import textwrap
import threading
import time
import typing as t

import psycopg2
import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.engine import build_migration_engine
from flask_safe_migrate.core.exceptions import ChecksumMismatchError
from flask_safe_migrate.core.exceptions import LockNotAcquiredError
from flask_safe_migrate.core.exceptions import StepFailedError
from flask_safe_migrate.core.exceptions import StepRefusedError
from flask_safe_migrate.core.runner import Runner
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.steps import StepHandle
from flask_safe_migrate.core.steps import StepRegistry

from . import migration30
from .services import FaultProxy
from .services import TestDatabase
from .services import connect_psycopg2
from .services import wait_until
from .together import run_together

_LEDGER_STEP = re.compile(r"INSERT INTO \"safe_migrate_ledger\" .*? VALUES \('([^']+)'")


def settings_for(url: str, **changes: t.Any) -> MigrateSettings:
    """Settings with quick retries for tests."""
    base: dict[str, t.Any] = {
        "database_uri": url,
        "retry_backoff_seconds": 0.02,
        "retry_backoff_max_seconds": 0.3,
        "retry_max_attempts": 20,
    }
    base.update(changes)
    return MigrateSettings(**base)


def runner_for(
    settings: MigrateSettings, registry: StepRegistry, engines: list[sa.Engine]
) -> Runner:
    """A runner on a fresh migration engine."""
    engine = build_migration_engine(settings)
    engines.append(engine)
    return Runner(settings, registry, engine)


def ledger_ids(db: TestDatabase) -> list[str]:
    """Step ids in the ledger, in id order."""
    if not db.scalar("SELECT to_regclass('safe_migrate_ledger') IS NOT NULL"):
        return []
    return [
        r[0] for r in db.query("SELECT step_id FROM safe_migrate_ledger ORDER BY 1")
    ]


def test_thirty_steps_with_every_commit_reply_lost_apply_once(
    database: TestDatabase,
    proxy: FaultProxy,
    engines: list[sa.Engine],
) -> None:
    """Dropping the reply to each message's COMMIT once still applies each step once.

    The 28 SQL steps share one pipelined message, so 3 replies are lost: that
    message's and each function step's.
    """

    def step_of(txn_text: str) -> str | None:
        match = _LEDGER_STEP.search(txn_text)
        return match.group(1) if match else None

    proxy.drop_each_commit_once(step_of)
    runner = runner_for(
        settings_for(proxy.url(database.name)),
        migration30.build_registry(),
        engines,
    )
    report = runner.run()
    assert proxy.dropped_commits == 3
    assert [o.status for o in report.outcomes] == ["applied"] * 30
    assert all("commit reply lost" in o.detail for o in report.outcomes)
    migration30.check_database(database.query)
    attempts = database.query("SELECT DISTINCT attempts FROM safe_migrate_ledger")
    assert attempts == [(1,)], "the ledger row is the one the first attempt wrote"


def test_random_kills_during_a_migration_apply_each_step_once(
    database: TestDatabase,
    proxy: FaultProxy,
    engines: list[sa.Engine],
) -> None:
    """Connections killed at random moments never leave a step half or twice applied.

    Pipelined, the whole migration takes about ten messages, so a random kill can
    miss it: the migration is undone and run again until one run had kills (each
    run is checked).
    """
    proxy.latency_seconds = 0.002
    for _ in range(8):
        database.query("DROP TABLE IF EXISTS items, audit, safe_migrate_ledger")
        proxy.reset_counters()
        proxy.chaos(0.03, 0.2)
        runner = runner_for(
            settings_for(proxy.url(database.name), retry_max_attempts=40),
            migration30.build_registry(),
            engines,
        )
        runner.run()
        proxy.chaos_off()
        migration30.check_database(database.query)
        if proxy.kills:
            break
    assert proxy.kills > 0


_WORKER = textwrap.dedent(
    """
    import json, sys
    from flask_safe_migrate.core.engine import build_migration_engine
    from flask_safe_migrate.core.runner import Runner
    from flask_safe_migrate.core.settings import MigrateSettings
    from tests.integration import migration30

    url = sys.argv[1]
    settings = MigrateSettings(database_uri=url, retry_backoff_seconds=0.05)
    engine = build_migration_engine(settings)
    registry = migration30.build_registry()
    print("ready", flush=True)
    sys.stdin.readline()  # the parent says go once all eight are ready
    report = Runner(settings, registry, engine).run()
    engine.dispose()
    print(json.dumps([[o.step_id, o.status] for o in report.outcomes]))
    """
)


def test_eight_processes_at_once_apply_each_step_once(
    database: TestDatabase,
    spawn: t.Callable[..., subprocess.Popen[str]],
) -> None:
    """8 processes running the same migration together through PgBouncer all succeed."""
    outcomes = run_together(spawn, _WORKER, database.bouncer_url)
    applied = [sid for o in outcomes for sid, status in o if status == "applied"]
    assert sorted(applied) == sorted(s.id for s in migration30.build_registry().steps())
    migration30.check_database(database.query)


def step_waits_for_lock(db: TestDatabase) -> bool:
    """Whether an ``ALTER TABLE hot`` in ``db`` is waiting for a lock right now."""
    return bool(
        db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE '%%ALTER TABLE hot%%'"
        )
    )


def test_lock_wait_does_not_stall_readers_and_succeeds_after_blocker(
    database: TestDatabase, engines: list[sa.Engine]
) -> None:
    """Behind a long transaction, readers keep flowing and the step applies after it."""
    database.query("CREATE TABLE hot (id int PRIMARY KEY); INSERT INTO hot VALUES (1)")
    lock_timeout = 0.5
    margin = 1.0
    blocker = connect_psycopg2(database.direct_url, application_name="blocker-app")
    blocker.autocommit = False
    blocker.cursor().execute("SELECT * FROM hot")  # holds ACCESS SHARE until commit

    stop = threading.Event()
    reads: list[float] = []
    errors: list[str] = []

    def reader() -> None:
        conn = connect_psycopg2(database.direct_url)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(
            f"SET statement_timeout = '{int((lock_timeout + margin) * 1000)}ms'"
        )
        while not stop.is_set():
            started = time.monotonic()
            try:
                cur.execute("SELECT count(*) FROM hot")
                reads.append(time.monotonic() - started)
            except psycopg2.Error as exc:
                errors.append(str(exc))
            time.sleep(0.05)
        conn.close()

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for r in readers:
        r.start()
    registry = StepRegistry()
    registry.sql("hot_1", "ALTER TABLE hot ADD COLUMN extra int")
    runner = runner_for(
        settings_for(
            database.bouncer_url,
            lock_timeout_seconds=lock_timeout,
            lock_timeout_initial_seconds=0.05,
        ),
        registry,
        engines,
    )

    def release_later() -> None:
        # Hold the lock for 3 s from when the step first waits for it, however long
        # a loaded machine took to get there.
        wait_until(lambda: step_waits_for_lock(database), 60, 0.02)
        time.sleep(3.0)
        blocker.commit()

    threading.Thread(target=release_later, daemon=True).start()
    report = runner.run()
    stop.set()
    for r in readers:
        r.join()
    blocker.close()
    assert [o.status for o in report.outcomes] == ["applied"]
    assert errors == [], "no reader may wait longer than lock_timeout plus the margin"
    assert len(reads) > 50
    assert report.elapsed_seconds >= 2.5, "the step must have waited for the blocker"
    assert (
        database.scalar(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'hot' AND column_name = 'extra'"
        )
        == 1
    )


def test_lock_budget_exhausted_names_the_blocker(
    database: TestDatabase, engines: list[sa.Engine]
) -> None:
    """When the lock never comes, the step gives up, names the blocker."""
    database.query("CREATE TABLE hot (id int PRIMARY KEY)")
    blocker = connect_psycopg2(database.direct_url, application_name="blocker-app")
    blocker.autocommit = False
    blocker.cursor().execute("SELECT * FROM hot")
    registry = StepRegistry()
    registry.sql("hot_1", "ALTER TABLE hot ADD COLUMN extra int")
    runner = runner_for(
        settings_for(
            database.bouncer_url,
            lock_timeout_seconds=0.2,
            lock_timeout_initial_seconds=0.05,
            lock_retry_max_elapsed_seconds=1.5,
        ),
        registry,
        engines,
    )
    try:
        with pytest.raises(LockNotAcquiredError) as info:
            runner.run()
    finally:
        blocker.close()
    assert "blocker-app" in str(info.value)
    assert info.value.step_id == "hot_1"
    assert ledger_ids(database) == []
    assert (
        database.scalar(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE column_name = 'extra'"
        )
        == 0
    )


def test_server_error_fails_the_step_alone(
    database: TestDatabase, engines: list[sa.Engine]
) -> None:
    """A failing step keeps earlier steps, gets no ledger row, and stops the run."""
    registry = StepRegistry()
    registry.sql("s1", "CREATE TABLE a (id int)")
    registry.sql("s2", "CREATE TABLE b (id int)")
    registry.sql("s3", "CREATE TABLE c (id int);\nALTER TABLE missing ADD COLUMN x int")
    registry.sql("s4", "CREATE TABLE d (id int)")
    runner = runner_for(settings_for(database.bouncer_url), registry, engines)
    with pytest.raises(StepFailedError) as info:
        runner.run()
    message = str(info.value)
    assert info.value.step_id == "s3"
    assert "s3" in message
    assert "ALTER TABLE missing ADD COLUMN x int" in message
    assert "line 2" in message
    assert ledger_ids(database) == ["s1", "s2"]
    tables = {r[0] for r in database.query("SELECT tablename FROM pg_tables")}
    assert {"a", "b"} <= tables
    assert not {"c", "d"} & tables


def test_syntax_error_is_refused_before_anything_runs(
    database: TestDatabase, engines: list[sa.Engine]
) -> None:
    """Invalid SQL is refused by the parser, naming the step and statement."""
    registry = StepRegistry()
    registry.sql("s1", "CREATE TABLE a (id int)")
    runner_for(settings_for(database.bouncer_url), registry, engines).run()
    registry.sql("s2", "CREATE TABLE b (id int)")
    registry.sql("s3", "ALTER TABLE a ADD COLUM x int")
    registry.sql("s4", "CREATE TABLE d (id int)")
    runner = runner_for(settings_for(database.bouncer_url), registry, engines)
    with pytest.raises(StepRefusedError) as info:
        runner.run()
    assert info.value.step_id == "s3"
    assert "ADD COLUM x int" in str(info.value)
    assert ledger_ids(database) == ["s1"]
    tables = {r[0] for r in database.query("SELECT tablename FROM pg_tables")}
    assert "a" in tables
    assert not {"b", "d"} & tables


def test_round_trips_fast_path_and_per_pending_step(
    database: TestDatabase,
    proxy: FaultProxy,
    engines: list[sa.Engine],
) -> None:
    """Up to date costs one query; consecutive SQL steps one message (pipelined);
    counted at the proxy."""
    settings = settings_for(proxy.url(database.name))
    registry = StepRegistry()
    runner = runner_for(settings, registry, engines)
    runner.run()  # creates the ledger, warms the engine (dialect setup)
    for i in range(5):
        registry.sql(f"r{i}", f"CREATE TABLE r{i} (id int)")

    @registry.step("r5")
    def two_statements(m: StepHandle) -> None:
        m.execute("CREATE TABLE r5 (id int)")
        m.execute("ALTER TABLE r5 ADD COLUMN x int")

    runner.engine.dispose()
    proxy.reset_counters()
    runner.run()
    # 1 ledger read + 1 message for the 5 SQL steps (was 2 per step before they
    # were pipelined: 11 in all) + (1 + 2 statements + 1) for the function step.
    assert proxy.round_trips == 1 + 1 + 4
    runner.engine.dispose()
    proxy.reset_counters()
    report = runner.run()
    assert report.up_to_date
    assert proxy.round_trips == 1
    assert proxy.connections_opened == 1


def test_changed_step_is_refused_with_both_checksums(
    database: TestDatabase, engines: list[sa.Engine]
) -> None:
    """An applied step whose SQL changed is refused, or only warned about when asked."""
    first = StepRegistry()
    first.sql("c1", "CREATE TABLE a (id int)")
    runner_for(settings_for(database.bouncer_url), first, engines).run()
    edited = StepRegistry()
    edited.sql("c1", "CREATE TABLE a (id bigint)")
    edited.sql("c2", "CREATE TABLE b (id int)")
    with pytest.raises(ChecksumMismatchError) as info:
        runner_for(settings_for(database.bouncer_url), edited, engines).run()
    message = str(info.value)
    assert first.get("c1").short_checksum in message
    assert edited.get("c1").short_checksum in message
    assert "SAFE_MIGRATE_CHANGED_STEPS=warn" in message
    assert ledger_ids(database) == ["c1"]
    report = runner_for(
        settings_for(database.bouncer_url, changed_steps="warn"), edited, engines
    ).run()
    assert [o.step_id for o in report.applied] == ["c2"]
    assert [s.step.id for s in report.changed] == ["c1"]


def test_whitespace_and_comment_edits_are_not_changes(
    database: TestDatabase, engines: list[sa.Engine]
) -> None:
    """Reformatting an applied step's SQL does not count as a change."""
    first = StepRegistry()
    first.sql("w1", "CREATE TABLE a (id int)")
    runner_for(settings_for(database.bouncer_url), first, engines).run()
    again = StepRegistry()
    again.sql("w1", "-- the leads table\ncreate table a (\n    id int\n);")
    report = runner_for(settings_for(database.bouncer_url), again, engines).run()
    assert report.up_to_date
    assert not report.changed


def test_dml_without_category_is_refused_before_running(
    database: TestDatabase, engines: list[sa.Engine]
) -> None:
    """A schema step with DML and no category is refused; with one it runs."""
    registry = StepRegistry()
    registry.sql("d1", "CREATE TABLE a (id int)")
    registry.sql("d2", "INSERT INTO a VALUES (1)")
    with pytest.raises(StepRefusedError, match="INSERT in a schema step"):
        runner_for(settings_for(database.bouncer_url), registry, engines).run()
    assert ledger_ids(database) == []
    allowed = StepRegistry()
    allowed.sql("d1", "CREATE TABLE a (id int)")
    allowed.sql("d2", "INSERT INTO a VALUES (1)", category="seed")
    runner_for(settings_for(database.bouncer_url), allowed, engines).run()
    assert database.query("SELECT id FROM a") == [(1,)]
