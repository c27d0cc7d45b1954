"""The backfill phase through TLS PgBouncer: resumable, each row updated once.

A trigger counts the updates of every row (``n_updates``), so a batch applied twice
shows as a row with ``n_updates = 2``, whatever the network or the process did.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.phases.backfill import BATCHES_PER_MESSAGE
from flask_safe_migrate.core.phases.backfill import BackfillProgress
from flask_safe_migrate.core.runner import Runner
from flask_safe_migrate.core.steps import BackfillHandle
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import StepRegistry

from .services import FaultProxy
from .services import TestDatabase
from .services import connect_psycopg2
from .services import wait_until
from .test_phase_schema import runner_for
from .test_phase_schema import settings_for

ROOT = Path(__file__).resolve().parents[2]
STEP = "0001_items_v"


def make_items(db: TestDatabase, rows: int) -> None:
    """``items(id, v, w, n_updates)``: ``rows`` rows, a trigger counting updates."""
    with connect_psycopg2(db.direct_url) as conn:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(
            """
            CREATE TABLE items (
                id bigint PRIMARY KEY,
                v bigint,
                w bigint NOT NULL DEFAULT 0,
                n_updates int NOT NULL DEFAULT 0
            );
            CREATE FUNCTION count_updates() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.v IS DISTINCT FROM OLD.v THEN
                    NEW.n_updates := OLD.n_updates + 1;
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER items_count BEFORE UPDATE ON items
                FOR EACH ROW EXECUTE FUNCTION count_updates();
            """
        )
        cur.execute(
            "INSERT INTO items (id) SELECT g FROM generate_series(1, %s) g", (rows,)
        )
        cur.execute("ANALYZE items")
    conn.close()


def registry(keys: str = "where") -> StepRegistry:
    """The backfill of ``items.v``: with ``where=`` (each batch walks the index
    for its keys), or ``"dense"``: without, and not idempotent, so a batch run
    twice shows in ``v`` (batches over dense keys take key ranges, no walk)."""
    reg = StepRegistry()
    if keys == "dense":
        reg.backfill(STEP, table="items", set="v = coalesce(v, 0) + id * 2")
    else:
        reg.backfill(STEP, table="items", set="v = id * 2", where="v IS NULL")
    return reg


#: Both ways a batch finds its keys (see registry()).
BATCH_KEYS = pytest.mark.parametrize("keys", ["where", "dense"])


def assert_each_row_updated_once(db: TestDatabase, rows: int) -> None:
    assert db.query(
        "SELECT count(*), count(*) FILTER (WHERE v = id * 2), min(n_updates), "
        "max(n_updates) FROM items"
    ) == [(rows, rows, 1, 1)]


def ledger_row(db: TestDatabase) -> tuple[str, dict[str, t.Any]]:
    state, progress = db.query(
        "SELECT state, progress FROM safe_migrate_ledger WHERE step_id = %s", (STEP,)
    )[0]
    return state, progress


class EveryThird:
    """A proxy filter true for every 3rd transaction whose text has ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.seen = 0

    def __call__(self, txn: str) -> bool:
        if self.marker not in txn:
            return False
        self.seen += 1
        return self.seen % 3 == 0

    @property
    def trapped(self) -> int:
        """How many replies the filter chose to drop (a kill may have beaten some)."""
        return self.seen // 3


def batches_done(db: TestDatabase) -> int:
    """The batches the ledger has recorded for the step; 0 before the ledger exists."""
    if db.scalar("SELECT to_regclass('safe_migrate_ledger') IS NOT NULL") is not True:
        return 0
    batches = db.scalar(
        "SELECT (progress->>'batches')::int FROM safe_migrate_ledger"
        " WHERE step_id = %s",
        (STEP,),
    )
    return int(batches or 0)


def wait_for_batches(
    db: TestDatabase, child: subprocess.Popen[str], at_least: int
) -> int:
    """Wait until the ledger records ``at_least`` batches; return the count then.

    :raises AssertionError: if ``child`` exits first (with its stderr).
    """
    seen = [0]

    def reached() -> bool:
        if child.poll() is not None:
            _, err = child.communicate()
            raise AssertionError(f"child exited {child.returncode}: {err[-3000:]}")
        seen[0] = batches_done(db)
        return seen[0] >= at_least

    wait_until(reached, 120, 0.01, message=f"{at_least} backfill batches")
    return seen[0]


def wait_for_no_active_queries(db: TestDatabase) -> None:
    """Wait until no other session of ``db`` is running a query or transaction."""
    busy_sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND state <> 'idle'"
    )
    wait_until(lambda: db.scalar(busy_sql) == 0, 60, 0.02, message="queries ended")


_CHILD = textwrap.dedent(
    """
    import logging, sys
    from flask_safe_migrate.core.engine import build_migration_engine
    from flask_safe_migrate.core.runner import Runner
    from flask_safe_migrate.core.settings import MigrateSettings
    from flask_safe_migrate.core.steps import Phase, StepRegistry
    logging.basicConfig(level=logging.INFO)
    reg = StepRegistry()
    reg.backfill("0001_items_v", table="items", set="v = id * 2", where="v IS NULL")
    settings = MigrateSettings(
        database_uri=sys.argv[1], retry_backoff_seconds=0.02,
        retry_backoff_max_seconds=0.3, retry_max_attempts=30,
        backfill_batch_seconds=0.01, backfill_pause_seconds=0.02,
    )
    engine = build_migration_engine(settings)
    Runner(settings, reg, engine).run([Phase.BACKFILL])
    engine.dispose()
    """
)


def test_million_row_backfill_killed_ten_times_updates_every_row_once(
    database: TestDatabase,
    proxy: FaultProxy,
    proxy_url: str,
    spawn: t.Callable[..., subprocess.Popen[str]],
) -> None:
    """5 process kills (SIGKILL) and 5 connection kills at random moments, then a
    run to the end: every row has its value and was updated exactly once."""
    rows = 1_000_000
    make_items(database, rows)
    rng = random.Random(20261121)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process_kills = connection_kills = 0
    for round_ in range(10):
        before = batches_done(database)
        child = spawn(
            [sys.executable, "-c", _CHILD, proxy_url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # Kill once this child has committed a random number of batches of its own:
        # a cold Python can take seconds to get there on a loaded machine.
        before = wait_for_batches(database, child, before + rng.randint(1, 2))
        if round_ % 2 == 0:
            child.send_signal(signal.SIGKILL)
            process_kills += 1
            child.communicate(timeout=30)
        else:
            assert proxy.kill_all() >= 1
            connection_kills += 1
            wait_for_batches(database, child, before + 1)  # it reconnected
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=30)
        wait_for_no_active_queries(database)  # a killed client's batch runs on
        if (
            database.scalar(
                "SELECT state FROM safe_migrate_ledger WHERE step_id = %s", (STEP,)
            )
            == "applied"
        ):
            break
    assert process_kills == 5
    assert connection_kills == 5
    state, progress = ledger_row(database)
    assert state == "running", "the kills came too late to interrupt anything"
    assert 0 < progress["updated"] < rows
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, proxy_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming after key" in done.stderr
    assert_each_row_updated_once(database, rows)
    state, progress = ledger_row(database)
    assert state == "applied"
    assert progress["updated"] == rows


@BATCH_KEYS
def test_lost_batch_replies_and_connection_chaos_update_each_row_once(
    database: TestDatabase,
    proxy: FaultProxy,
    proxy_url: str,
    engines: list[sa.Engine],
    keys: str,
) -> None:
    """The reply of every 3rd batch is lost after it committed, and connections die
    every 0.3-0.9 s: the runner re-reads its checkpoint and nothing runs twice."""
    rows = 60_000
    make_items(database, rows)
    # Batches of ~2 ms: however fast the machine and the path, there are enough
    # messages (each carries several batches, which grow on the server) for
    # several lost replies (at the default 0.2 s, a direct connection on an idle
    # machine did 60,000 rows in 7 growing batches: 2 lost replies).
    settings = settings_for(
        proxy_url, backfill_batch_size=500, backfill_batch_seconds=0.002
    )
    trap = EveryThird("$safe_migrate_batch$")
    proxy.drop_reply(trap)
    proxy.chaos(0.3, 0.9)
    report = runner_for(settings, registry(keys), engines).run([Phase.BACKFILL])
    proxy.chaos_off()
    proxy.drop_commit_reply_off()
    assert [o.status for o in report.outcomes] == ["applied"]
    # A chaos kill between a batch's COMMIT and its reply leaves no reply to drop:
    # count the batches sent into the trap, and require that replies were lost.
    assert trap.trapped >= 3
    assert proxy.dropped_commits >= 1
    assert_each_row_updated_once(database, rows)
    state, progress = ledger_row(database)
    assert state == "applied"
    assert progress["updated"] == rows


def test_concurrent_writer_never_waits_past_its_statement_timeout(
    database: TestDatabase, pgbouncer: t.Any, proxy_url: str, engines: list[sa.Engine]
) -> None:
    """A writer updating random rows of the same table through PgBouncer, with a
    statement_timeout of the batch target plus 0.8 s, never times out; no batch
    held its locks longer than the bound, per the ledger's recorded durations."""
    rows = 300_000
    make_items(database, rows)
    target = 0.2
    settings = settings_for(proxy_url, backfill_batch_seconds=target)
    stop = threading.Event()
    writes: list[float] = []
    errors: list[BaseException] = []

    def writer() -> None:
        conn = connect_psycopg2(database.bouncer_url)
        conn.autocommit = True
        cur = conn.cursor()
        rng = random.Random(7)
        try:
            while not stop.is_set():
                key = rng.randint(1, rows)
                t0 = time.monotonic()
                cur.execute(
                    "BEGIN; SET LOCAL statement_timeout = %s; "
                    "UPDATE items SET w = w + 1 WHERE id = %s; COMMIT",
                    (f"{round((target + 0.8) * 1000)}ms", key),
                )
                writes.append(time.monotonic() - t0)
                time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        report = runner_for(settings, registry(), engines).run([Phase.BACKFILL])
    finally:
        stop.set()
        thread.join(timeout=30)
    assert errors == []
    assert len(writes) > 50
    assert [o.status for o in report.outcomes] == ["applied"]
    assert_each_row_updated_once(database, rows)
    _, progress = ledger_row(database)
    assert progress["batches"] >= 5
    # Each batch holds its row locks for its own duration: bounded near the target.
    assert progress["max_batch_seconds"] < target + 0.8
    assert database.scalar("SELECT sum(w) FROM items") == len(writes)


def test_max_seconds_stops_at_a_checkpoint_and_the_next_run_resumes(
    database: TestDatabase, proxy_url: str, engines: list[sa.Engine]
) -> None:
    rows = 200_000
    make_items(database, rows)
    # Batches of ~2 ms, so the budget ends long before the rows do (the batches
    # of one message grow on the server; at the 0.2 s default, two messages of
    # four batches covered all 200,000 rows within 0.3 s on an idle machine).
    settings = settings_for(
        proxy_url, backfill_batch_size=2000, backfill_batch_seconds=0.002
    )
    seen: list[BackfillProgress] = []
    runner = runner_for(settings, registry(), engines)
    runner.backfill.on_progress = seen.append
    first = runner.run([Phase.BACKFILL], max_seconds=0.3)
    assert first.stopped_by_budget
    assert [o.status for o in first.outcomes] == ["partial"]
    state, progress = ledger_row(database)
    assert state == "running"
    assert 0 < progress["updated"] < rows
    assert (
        database.scalar("SELECT count(*) FROM items WHERE v IS NOT NULL")
        == (progress["updated"])
    )
    assert seen
    assert seen[-1].estimate == rows
    assert seen[-1].eta_seconds is not None
    second = runner_for(settings, registry(), engines).run([Phase.BACKFILL])
    assert [o.status for o in second.outcomes] == ["applied"]
    assert_each_row_updated_once(database, rows)
    third = runner_for(settings, registry(), engines).run([Phase.BACKFILL])
    assert third.up_to_date


@BATCH_KEYS
def test_two_runners_at_once_share_the_batches(
    database: TestDatabase, pgbouncer: t.Any, engines: list[sa.Engine], keys: str
) -> None:
    rows = 100_000
    make_items(database, rows)
    settings = settings_for(database.bouncer_url, backfill_batch_size=1000)
    runners = [runner_for(settings, registry(keys), engines) for _ in range(2)]
    results: list[str] = []

    def run(runner: Runner) -> None:
        report = runner.run([Phase.BACKFILL])
        results.extend(o.status for o in report.outcomes)

    threads = [threading.Thread(target=run, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert "applied" in results
    assert_each_row_updated_once(database, rows)


def test_function_backfill_resumes_from_its_returned_cursor(
    database: TestDatabase, proxy: FaultProxy, proxy_url: str, engines: list[sa.Engine]
) -> None:
    """A custom batch function: its checkpoint rides in the batch's transaction, so
    lost COMMIT replies do not make it run a batch twice."""
    rows = 20_000
    make_items(database, rows)
    reg = StepRegistry()
    calls: list[t.Any] = []

    @reg.backfill(STEP)
    def fill(batch: BackfillHandle) -> int | None:
        calls.append(batch.after)
        found = batch.execute(
            "UPDATE items SET v = id * 2 WHERE id IN (SELECT id FROM items "
            "WHERE id > :after ORDER BY id LIMIT :limit) RETURNING id",
            {"after": batch.after or 0, "limit": batch.limit},
        )
        return max(r[0] for r in found) if found else None

    proxy.drop_commit_reply(EveryThird("SELECT state, progress"))
    report = runner_for(
        settings_for(proxy_url, backfill_batch_size=700, backfill_batch_seconds=0.005),
        reg,
        engines,
    ).run([Phase.BACKFILL])
    assert [o.status for o in report.outcomes] == ["applied"]
    assert proxy.dropped_commits >= 3
    assert_each_row_updated_once(database, rows)
    state, progress = ledger_row(database)
    assert state == "applied"
    assert progress["updated"] == rows
    assert calls[0] is None


def test_cli_status_shows_backfill_progress(
    database: TestDatabase, proxy_url: str, engines: list[sa.Engine]
) -> None:
    rows = 50_000
    make_items(database, rows)
    runner = runner_for(settings_for(proxy_url), registry(), engines)
    runner.run([Phase.BACKFILL])
    code = textwrap.dedent(
        """
        import json, sys
        from flask import Flask
        from flask_safe_migrate import SafeMigrate
        app = Flask("x")
        app.config["SAFE_MIGRATE_DATABASE_URI"] = sys.argv[1]
        app.config["SAFE_MIGRATE_ON_BOOT"] = "off"
        m = SafeMigrate(app)
        m.backfill("0001_items_v", table="items", set="v = id * 2", where="v IS NULL")
        runner = app.test_cli_runner()
        out = runner.invoke(args=["safe-migrate", "status", "--json"])
        print(out.output)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, proxy_url],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    data = json.loads(result.stdout)
    (step,) = data["steps"]
    assert step["state"] == "applied"
    assert step["progress"]["updated"] == rows
    assert step["progress"]["batches"] >= 1


def test_missing_table_fails_naming_the_step(
    database: TestDatabase, proxy_url: str, engines: list[sa.Engine]
) -> None:
    from flask_safe_migrate.core.exceptions import StepFailedError

    with pytest.raises(StepFailedError, match=r"0001_items_v .*items does not exist"):
        runner_for(settings_for(proxy_url), registry(), engines).run([Phase.BACKFILL])


@BATCH_KEYS
def test_each_batch_costs_one_round_trip(
    database: TestDatabase,
    proxy: FaultProxy,
    proxy_url: str,
    engines: list[sa.Engine],
    keys: str,
) -> None:
    """Counted at the proxy: a run reads the ledger (1), starts the step (1), then
    sends one message per BATCHES_PER_MESSAGE batches (each its own transaction),
    the last batch of which reaches the last key."""
    rows = 30_000
    make_items(database, rows)
    runner = runner_for(
        settings_for(proxy_url, backfill_batch_size=100), registry(keys), engines
    )
    runner.ensure_ledger()  # also pays the engine's first-connect queries
    proxy.reset_counters()
    report = runner.run([Phase.BACKFILL])
    assert [o.status for o in report.outcomes] == ["applied"]
    _, progress = ledger_row(database)
    assert progress["batches"] >= 5
    assert progress["batches"] > BATCHES_PER_MESSAGE
    assert proxy.round_trips == 2 + math.ceil(progress["batches"] / BATCHES_PER_MESSAGE)
    assert proxy.connections_opened == 0
    assert_each_row_updated_once(database, rows)


def test_text_keys_are_paged_by_the_index(
    database: TestDatabase, proxy_url: str, engines: list[sa.Engine]
) -> None:
    """A non-integer key (text) is paged with the index (the next n keys)."""
    database.postgres.execute(
        "CREATE TABLE codes (code text PRIMARY KEY, v text); "
        "INSERT INTO codes (code) SELECT md5(g::text) FROM generate_series(1, 5000) g",
        dbname=database.name,
    )
    reg = StepRegistry()
    reg.backfill("0001_codes_v", table="codes", key="code", set="v = upper(code)")
    runner = runner_for(
        settings_for(proxy_url, backfill_batch_size=300, backfill_batch_seconds=0.001),
        reg,
        engines,
    )
    report = runner.run([Phase.BACKFILL])
    assert [o.status for o in report.outcomes] == ["applied"]
    assert database.scalar("SELECT count(*) FROM codes WHERE v = upper(code)") == 5000
    progress = database.scalar(
        "SELECT progress FROM safe_migrate_ledger WHERE step_id = '0001_codes_v'"
    )
    assert progress["updated"] == 5000
    assert progress["batches"] >= 3


def keyed_table(db: TestDatabase, key_type: str, keys: t.Sequence[t.Any]) -> None:
    """``keyed(k <key_type> PRIMARY KEY, v bigint)`` with exactly ``keys``."""
    with connect_psycopg2(db.direct_url) as conn:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE keyed (k {key_type} PRIMARY KEY, v bigint)")
        if keys:
            cur.executemany("INSERT INTO keyed (k) VALUES (%s)", [(k,) for k in keys])
        cur.execute("ANALYZE keyed")
    conn.close()


@pytest.mark.parametrize(
    ("key_type", "keys", "batch_size"),
    [
        pytest.param("bigint", list(range(10, 510, 10)), 7, id="sparse"),
        pytest.param("bigint", [1, 2, 1000, 1001, 50_000], 3, id="gaps"),
        pytest.param("bigint", list(range(1_000_001, 1_000_005)), 1000, id="not-at-1"),
        pytest.param("integer", list(range(-20, 30)), 9, id="negative"),
        pytest.param("bigint", [7], 1000, id="one-row"),
        pytest.param("bigint", [1, 2], 1000, id="two-rows"),
        pytest.param("smallint", [3, 4, 5], 1000, id="three-rows"),
        pytest.param("bigint", list(range(1, 501)), 100, id="dense"),
        pytest.param("text", ["a", "b", "c"], 1000, id="text-three-rows"),
        pytest.param("text", [f"k{i:03d}" for i in range(0, 300, 3)], 7, id="text"),
    ],
)
def test_backfill_counts_stay_within_the_keys_that_exist(
    database: TestDatabase,
    proxy_url: str,
    engines: list[sa.Engine],
    key_type: str,
    keys: list[t.Any],
    batch_size: int,
) -> None:
    """Counted keys are never negative, never more than the keys that exist, and
    never go down; at the end they are exactly the keys, and the checkpoint is
    the table's max key (never past it)."""
    keyed_table(database, key_type, keys)
    reg = StepRegistry()
    reg.backfill("0001_keyed_v", table="keyed", key="k", set="v = 1")
    runner = runner_for(
        settings_for(proxy_url, backfill_batch_size=batch_size), reg, engines
    )
    seen: list[BackfillProgress] = []
    runner.backfill.on_progress = seen.append
    report = runner.run([Phase.BACKFILL])
    assert [o.status for o in report.outcomes] == ["applied"]
    assert database.scalar("SELECT count(*) FROM keyed WHERE v = 1") == len(keys)
    scanned = [p.scanned for p in seen]
    assert all(0 <= s <= len(keys) for s in scanned), scanned
    assert scanned == sorted(scanned), scanned
    assert scanned[-1] == len(keys)
    assert [p.updated for p in seen] == sorted(p.updated for p in seen)
    assert seen[-1].updated == len(keys)
    assert "-" not in seen[-1].describe()
    progress = database.scalar(
        "SELECT progress FROM safe_migrate_ledger WHERE step_id = '0001_keyed_v'"
    )
    assert progress["scanned"] == len(keys)
    assert progress["updated"] == len(keys)
    assert database.scalar(
        f"SELECT %s::{key_type} = max(k) FROM keyed", (progress["last"],)
    ), f"checkpoint {progress['last']} is not the max key {max(keys)}"


def test_no_batch_updates_more_rows_than_its_size(
    database: TestDatabase, proxy_url: str, engines: list[sa.Engine]
) -> None:
    """Dense keys, a sparse stretch (one key in 997 values), dense keys again:
    where the keys are dense a batch takes the next n key values instead of
    walking the index for n keys, so it never holds more rows than its size,
    even right after the sparse stretch (sizes start at 50 and at most double
    from one batch to the next). Every row is updated once; counts are exact."""
    keys = [*range(1, 3001), *range(10_000, 1_000_000, 997)]
    keys += range(2_000_000, 2_005_000)
    keyed_table(database, "bigint", keys)
    database.postgres.execute(
        "CREATE TABLE batch_rows (id serial PRIMARY KEY, n bigint);"
        "CREATE FUNCTION count_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO batch_rows (n) SELECT count(*) FROM changed; RETURN NULL; END $$;"
        "CREATE TRIGGER keyed_rows AFTER UPDATE ON keyed REFERENCING NEW TABLE AS "
        "changed FOR EACH STATEMENT EXECUTE FUNCTION count_rows()",
        dbname=database.name,
    )
    reg = StepRegistry()
    reg.backfill("0001_keyed_v", table="keyed", key="k", set="v = coalesce(v, 0) + 1")
    settings = settings_for(proxy_url, backfill_batch_size=50)
    report = runner_for(settings, reg, engines).run([Phase.BACKFILL])
    assert [o.status for o in report.outcomes] == ["applied"]
    sizes = [n for (n,) in database.query("SELECT n FROM batch_rows ORDER BY id")]
    assert sum(sizes) == len(keys)
    assert all(n <= 50 * 2**i for i, n in enumerate(sizes)), sizes
    assert database.query("SELECT count(*), min(v), max(v) FROM keyed") == [
        (len(keys), 1, 1)
    ]
    progress = database.scalar(
        "SELECT progress FROM safe_migrate_ledger WHERE step_id = '0001_keyed_v'"
    )
    assert (progress["scanned"], progress["updated"]) == (len(keys), len(keys))


def test_backfill_of_an_empty_table_counts_nothing(
    database: TestDatabase, proxy_url: str, engines: list[sa.Engine]
) -> None:
    """No keys: done in one batch, zero rows, no checkpoint."""
    keyed_table(database, "bigint", [])
    reg = StepRegistry()
    reg.backfill("0001_keyed_v", table="keyed", key="k", set="v = 1")
    report = runner_for(settings_for(proxy_url), reg, engines).run([Phase.BACKFILL])
    assert [o.status for o in report.outcomes] == ["applied"]
    progress = database.scalar(
        "SELECT progress FROM safe_migrate_ledger WHERE step_id = '0001_keyed_v'"
    )
    assert (progress["scanned"], progress["updated"], progress["last"]) == (0, 0, None)
