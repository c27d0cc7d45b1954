"""Live-traffic stall behind a blocked ALTER TABLE: growing lock timeout vs a fixed one.

A transaction holds a lock on ``hot`` for 8 s. Meanwhile four readers each read the
table every 50 ms through PgBouncer, and a migration adds a column to it. While the
ALTER waits for its lock, every read queues behind it, so the question is how long
reads are held up: with flask-safe-migrate's schedule (lock_timeout growing from
0.1 s to 2 s, with pauses) and with a fixed 2 s lock_timeout retried after a short
backoff, measured in the same run on the same servers.

Run: ``.venv/bin/python -m benchmarks.lock_stall`` (starts its own PostgreSQL and
PgBouncer; about 30 s).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import typing as t

import psycopg2

from flask_safe_migrate.core.engine import build_migration_engine
from flask_safe_migrate.core.runner import Runner
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.steps import StepRegistry
from tests.integration.services import PgBouncer
from tests.integration.services import Postgres
from tests.integration.services import connect_psycopg2
from tests.integration.services import wait_until

from .common import running_stack
from .common import write_results

BLOCK_SECONDS = 8.0
READERS = 4
READ_EVERY_SECONDS = 0.05
DELAYED_SECONDS = 1.0


def _fixed_timeout_migration(url: str) -> None:
    """The usual approach: SET lock_timeout 2s, retry after a short backoff."""
    while True:
        conn = connect_psycopg2(url)
        conn.autocommit = False
        try:
            cur = conn.cursor()
            cur.execute("SET LOCAL lock_timeout = '2s'")
            cur.execute("ALTER TABLE hot ADD COLUMN extra int")
            conn.commit()
            return
        except psycopg2.errors.LockNotAvailable:
            conn.rollback()
            time.sleep(0.1)
        finally:
            conn.close()


def _ours_migration(url: str) -> None:
    settings = MigrateSettings(database_uri=url)
    registry = StepRegistry()
    registry.sql("hot_extra", "ALTER TABLE hot ADD COLUMN extra int")
    engine = build_migration_engine(settings)
    try:
        Runner(settings, registry, engine).run()
    finally:
        engine.dispose()


def measure(
    postgres: Postgres, bouncer: PgBouncer, name: str, migrate: t.Callable[[str], None]
) -> dict[str, t.Any]:
    """Run one scenario on a fresh database and return read-latency figures."""
    db = f"bench_lock_{name}"
    postgres.create_database(db)
    direct = postgres.url(db)
    pooled = bouncer.url(db)
    setup = connect_psycopg2(direct)
    setup.autocommit = True
    setup.cursor().execute(
        "CREATE TABLE hot (id int PRIMARY KEY); INSERT INTO hot VALUES (1)"
    )
    setup.close()

    stop = threading.Event()
    latencies: list[float] = []
    lock = threading.Lock()

    def reader() -> None:
        conn = connect_psycopg2(pooled)
        conn.autocommit = True
        cur = conn.cursor()
        while not stop.is_set():
            started = time.monotonic()
            cur.execute("SELECT count(*) FROM hot")
            cur.fetchall()
            with lock:
                latencies.append(time.monotonic() - started)
            time.sleep(READ_EVERY_SECONDS)
        conn.close()

    blocker = connect_psycopg2(direct)
    blocker.autocommit = False
    blocker.cursor().execute("SELECT * FROM hot")
    readers = [threading.Thread(target=reader) for _ in range(READERS)]
    for r in readers:
        r.start()
    threading.Timer(BLOCK_SECONDS, blocker.commit).start()
    started = time.monotonic()
    migrate(pooled)
    migration_seconds = time.monotonic() - started
    with lock:
        done = len(latencies)
    wait_until(lambda: len(latencies) >= done + READERS, 60, 0.01)
    stop.set()
    for r in readers:
        r.join()
    blocker.close()
    postgres.drop_database(db)
    ordered = sorted(latencies)
    delayed = sum(1 for x in latencies if x > DELAYED_SECONDS)
    return {
        "scenario": name,
        "reads": len(latencies),
        "delayed_over_1s": delayed,
        "delayed_share": delayed / len(latencies),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000,
        "max_ms": ordered[-1] * 1000,
        "migration_seconds": migration_seconds,
    }


def main() -> int:
    """Run both scenarios and write benchmarks/results/lock_stall.{json,md}."""
    with running_stack() as stack:
        rows = [
            measure(
                stack.postgres, stack.bouncer, "fixed_2s", _fixed_timeout_migration
            ),
            measure(stack.postgres, stack.bouncer, "safe_migrate", _ours_migration),
        ]
    base = rows[0]["delayed_share"] or 1e-9
    lines = [
        "| scenario | reads | delayed > 1 s | share | p50 ms | p99 ms | max ms | "
        "migration s | share vs fixed 2 s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['reads']} | {r['delayed_over_1s']} | "
            f"{r['delayed_share']:.1%} | {r['p50_ms']:.1f} | {r['p99_ms']:.0f} | "
            f"{r['max_ms']:.0f} | {r['migration_seconds']:.1f} | "
            f"{r['delayed_share'] / base:.2f} |"
        )
    write_results("lock_stall", rows, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
