"""Pipelined schema steps through TLS PgBouncer and the fault proxy: messages
counted at the proxy, every fault checked in the database (ledger and a DDL
counter)."""

from __future__ import annotations

import subprocess
import textwrap
import threading
import typing as t

import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.engine import build_migration_engine
from flask_safe_migrate.core.exceptions import LockNotAcquiredError
from flask_safe_migrate.core.exceptions import StepFailedError
from flask_safe_migrate.core.phases import StepOutcome
from flask_safe_migrate.core.runner import Runner
from flask_safe_migrate.core.runner import RunReport
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import StepRegistry

from . import migration100
from .services import FaultProxy
from .services import TestDatabase
from .services import connect_psycopg2
from .services import wait_until
from .test_phase_schema import settings_for
from .together import run_together

ALL = range(1, migration100.COUNT + 1)
#: Messages of a fresh 100-step run: ledger read, ledger creation, 2 x 50 steps.
FRESH_MESSAGES = 4


def warm_runner(
    settings: MigrateSettings,
    registry: StepRegistry,
    engines: list[sa.Engine],
    **kwargs: t.Any,
) -> Runner:
    """A runner whose engine has paid its first-connect (dialect) queries and
    holds no connection: the next message counted is the run's first."""
    engine = build_migration_engine(settings)
    engines.append(engine)
    engine.connect().close()
    engine.dispose()
    return Runner(settings, registry, engine, **kwargs)


@pytest.fixture
def counted(database: TestDatabase) -> TestDatabase:
    """The test database with the DDL counter installed."""
    migration100.install_counter(database.query)
    return database


def test_hundred_steps_cost_four_messages_on_a_fresh_database(
    counted: TestDatabase, proxy: FaultProxy, engines: list[sa.Engine]
) -> None:
    """100 pending SQL steps on a fresh database: ledger read, ledger creation and
    two messages of 50 steps (was 202 before pipelining)."""
    seen: list[StepOutcome] = []
    runner = warm_runner(
        settings_for(proxy.url(counted.name)),
        migration100.build_registry(),
        engines,
        on_outcome=seen.append,
    )
    proxy.reset_counters()
    report = runner.run()
    assert proxy.round_trips == FRESH_MESSAGES
    assert proxy.connections_opened == 1
    assert [o.step_id for o in report.outcomes] == [
        migration100.step_id(i) for i in ALL
    ]
    assert {(o.status, o.attempts) for o in report.outcomes} == {("applied", 1)}
    assert seen == report.outcomes
    migration100.check_applied(counted.query, ALL)
    proxy.reset_counters()
    assert runner.run().up_to_date
    assert proxy.round_trips == 1


def test_boot_with_one_pending_step_costs_two_messages(
    counted: TestDatabase, proxy: FaultProxy, engines: list[sa.Engine]
) -> None:
    """A boot run (schema phase) with one pending SQL step: the ledger read and one
    message (was 3); it stops before the pending index step after it."""
    settings = settings_for(proxy.url(counted.name))
    registry = migration100.build_registry(count=99)
    warm_runner(settings, registry, engines).run()
    registry.sql(migration100.step_id(100), migration100.default_sql(100))
    registry.index("p101_index", table="p099", columns=["c100"])
    runner = warm_runner(settings, registry, engines)
    proxy.reset_counters()
    report = runner.run([Phase.SCHEMA])
    assert proxy.round_trips == 2
    assert [(o.step_id, o.status) for o in report.outcomes] == [("p100", "applied")]
    assert [s.id for s in report.waiting] == ["p101_index"]
    migration100.check_applied(counted.query, ALL)


def _nth_query(n: int) -> t.Callable[[str], bool]:
    """A proxy filter true for the n-th Query message it sees (1-based), once."""
    seen = [0]

    def nth(_txn_text: str) -> bool:
        seen[0] += 1
        return seen[0] == n

    return nth


@pytest.mark.parametrize("where", ["before", "reply"])
@pytest.mark.parametrize("message", range(1, FRESH_MESSAGES + 1))
def test_kill_at_every_message_boundary_applies_each_step_once(
    counted: TestDatabase,
    proxy: FaultProxy,
    engines: list[sa.Engine],
    message: int,
    where: str,
) -> None:
    """The connection killed before message n of a fresh run reaches the server, or
    after it did (its reply lost): every step applied once, all reported applied."""
    runner = warm_runner(
        settings_for(proxy.url(counted.name)), migration100.build_registry(), engines
    )
    proxy.reset_counters()
    if where == "before":
        proxy.kill_before(_nth_query(message))
    else:
        proxy.drop_reply(_nth_query(message))
    report = runner.run()
    assert proxy.kills == 1
    assert [o.step_id for o in report.outcomes] == [
        migration100.step_id(i) for i in ALL
    ]
    assert {o.status for o in report.outcomes} == {"applied"}
    migration100.check_applied(counted.query, ALL)
    attempts = {r[0] for r in counted.query("SELECT attempts FROM safe_migrate_ledger")}
    # The row is the committing attempt's: the first when only its reply was lost.
    assert attempts == ({1} if where == "reply" else {1, 2} if message > 2 else {1})


def test_lost_reply_of_a_message_is_read_back(
    counted: TestDatabase, proxy: FaultProxy, engines: list[sa.Engine]
) -> None:
    """The reply to the first message of 50 steps is lost: they all committed, the
    ledger read on a new connection says so, and the next 50 follow."""
    runner = warm_runner(
        settings_for(proxy.url(counted.name)), migration100.build_registry(), engines
    )
    proxy.drop_commit_reply(lambda text: "'p001'" in text)
    proxy.reset_counters()
    report = runner.run()
    proxy.drop_commit_reply_off()
    assert proxy.dropped_commits == 1
    lost = {o.step_id for o in report.outcomes if "commit reply lost" in o.detail}
    assert lost == {migration100.step_id(i) for i in range(1, 51)}
    # read, create, the lost message, the read back, the second 50
    assert proxy.round_trips == FRESH_MESSAGES + 1
    migration100.check_applied(counted.query, ALL)


def _blocker(database: TestDatabase) -> t.Any:
    """A direct connection holding ACCESS SHARE on ``hot`` in an open transaction."""
    conn = connect_psycopg2(database.direct_url)
    conn.cursor().execute("LOCK TABLE hot IN ACCESS SHARE MODE")
    return conn


def _waiting_on_hot(database: TestDatabase) -> bool:
    return bool(
        database.scalar(
            "SELECT count(*) FROM pg_locks WHERE NOT granted "
            "AND relation = 'hot'::regclass"
        )
    )


def test_kill_in_the_middle_of_a_message_applies_each_step_once(
    counted: TestDatabase, proxy: FaultProxy, engines: list[sa.Engine]
) -> None:
    """Killed while step 37 of a 50-step message waits for a lock: steps 1-36 are
    committed; the server goes on with the cut message once the lock is free,
    while the runner reads back and sends the rest again; each step applies once."""
    special = {37: "SET LOCAL lock_timeout = 0;\nALTER TABLE hot ADD COLUMN c37 int"}
    runner = warm_runner(
        settings_for(proxy.url(counted.name)),
        migration100.build_registry(special),
        engines,
    )
    blocker = _blocker(counted)
    result: list[RunReport | BaseException] = []

    def run() -> None:
        try:
            result.append(runner.run())
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_until(lambda: _waiting_on_hot(counted), 30, message="step 37 waits")
        assert len(counted.query("SELECT step_id FROM safe_migrate_ledger")) == 36
        assert proxy.kill_all() == 1
    finally:
        blocker.rollback()
        blocker.close()
        thread.join(60)
    report = result[0]
    assert isinstance(report, RunReport), report
    assert [o.step_id for o in report.outcomes] == [
        migration100.step_id(i) for i in ALL
    ]
    assert {o.status for o in report.outcomes} == {"applied"}
    migration100.check_applied(counted.query, ALL, special)


def test_lock_timeout_on_step_37_is_retried_alone_then_the_rest_resume(
    counted: TestDatabase, proxy: FaultProxy, engines: list[sa.Engine]
) -> None:
    """Step 37 hits its lock timeout inside a message: 1-36 stay committed, 37 goes
    through its lock-retry schedule alone (the blocker leaves during the pause),
    38-100 follow pipelined."""
    special = {37: "ALTER TABLE hot ADD COLUMN c37 int"}
    blocker = _blocker(counted)
    pauses: list[float] = []

    def sleep(seconds: float) -> None:  # the lock-retry pause: the blocker leaves
        pauses.append(seconds)
        blocker.rollback()

    runner = warm_runner(
        settings_for(proxy.url(counted.name)),
        migration100.build_registry(special),
        engines,
        sleep=sleep,
    )
    proxy.reset_counters()
    try:
        report = runner.run()
    finally:
        blocker.close()
    assert len(pauses) == 1
    outcomes = {o.step_id: o for o in report.outcomes}
    assert len(report.outcomes) == 100
    assert outcomes["p037"].status == "applied"
    assert outcomes["p037"].attempts == 2
    assert {o.attempts for o in report.outcomes if o.step_id != "p037"} == {1}
    # read, create, 1-37 (stops at 37), read back, 37 alone (2), 38-87, 88-100
    assert proxy.round_trips == 8
    migration100.check_applied(counted.query, ALL, special)


def test_lock_timeout_on_step_37_gives_up_naming_it(
    counted: TestDatabase, engines: list[sa.Engine]
) -> None:
    """The table stays locked: the error names step 37 and its blocker; 1-36 are
    applied, 38-100 are not."""
    special = {37: "ALTER TABLE hot ADD COLUMN c37 int"}
    blocker = _blocker(counted)
    runner = warm_runner(
        settings_for(counted.bouncer_url, lock_retry_max_elapsed_seconds=0.3),
        migration100.build_registry(special),
        engines,
    )
    try:
        with pytest.raises(LockNotAcquiredError) as info:
            runner.run()
    finally:
        blocker.close()
    assert info.value.step_id == "p037"
    assert "step p037 (" in str(info.value)
    assert "migration100.py:" in str(info.value)
    migration100.check_applied(counted.query, range(1, 37), special)


def test_failing_step_50_names_it_and_the_rest_resume_after(
    counted: TestDatabase, proxy: FaultProxy, engines: list[sa.Engine]
) -> None:
    """Step 50 fails inside a message: 1-49 stay committed once, the error names
    step 50, its file:line and statement; once fixed, 50-100 apply."""
    broken = {50: "ALTER TABLE missing_table ADD COLUMN x int"}
    settings = settings_for(proxy.url(counted.name))
    runner = warm_runner(settings, migration100.build_registry(broken), engines)
    with pytest.raises(StepFailedError) as info:
        runner.run()
    message = str(info.value)
    assert info.value.step_id == "p050"
    assert "step p050 (" in message
    assert "migration100.py:" in message
    assert "ALTER TABLE missing_table ADD COLUMN x int" in message
    assert 'relation "missing_table" does not exist' in message
    partial = info.value.report
    assert [o.step_id for o in partial.outcomes] == [
        migration100.step_id(i) for i in range(1, 50)
    ]
    migration100.check_applied(counted.query, range(1, 50))
    fixed = warm_runner(settings, migration100.build_registry(), engines)
    report = fixed.run()
    assert [o.step_id for o in report.outcomes] == [
        migration100.step_id(i) for i in range(50, 101)
    ]
    migration100.check_applied(counted.query, ALL)


_WORKER = textwrap.dedent(
    """
    import json, sys
    from flask_safe_migrate.core.engine import build_migration_engine
    from flask_safe_migrate.core.runner import Runner
    from flask_safe_migrate.core.settings import MigrateSettings
    from tests.integration import migration100

    settings = MigrateSettings(database_uri=sys.argv[1], retry_backoff_seconds=0.05)
    engine = build_migration_engine(settings)
    engine.connect().close()
    runner = Runner(settings, migration100.build_registry(), engine)
    print("ready", flush=True)
    sys.stdin.readline()  # the parent says go once all eight are ready
    report = runner.run()
    engine.dispose()
    print(json.dumps([[o.step_id, o.status] for o in report.outcomes]))
    """
)


def test_eight_processes_boot_a_fresh_database_at_once(
    counted: TestDatabase, spawn: t.Callable[..., subprocess.Popen[str]]
) -> None:
    """8 processes run the boot migration (100 SQL steps) on a fresh database at
    once through PgBouncer: each step applied once, by exactly one of them."""
    outcomes = run_together(spawn, _WORKER, counted.bouncer_url)
    applied = [sid for o in outcomes for sid, status in o if status == "applied"]
    assert sorted(applied) == [migration100.step_id(i) for i in ALL]
    migration100.check_applied(counted.query, ALL)
