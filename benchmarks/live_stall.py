"""Figure 3: live traffic while a migration step waits for a lock, per tool.

A table ``hot`` (1,000 rows) gets live traffic through the latency proxy: two
readers (``SELECT`` of a random row) and one writer (``UPDATE`` of a random row),
each with its own connection, each query followed by a ``LIVE_PAUSE_SECONDS`` pause.
A transaction started directly on the server reads ``hot`` and stays open for
``BLOCK_SECONDS``. Meanwhile each tool boots an app whose one pending step is
``ALTER TABLE hot ADD COLUMN ...`` (an ACCESS EXCLUSIVE lock). While the ALTER
waits in the lock queue, every live query on ``hot`` waits behind it. Measured: the
latency of every live query from the blocker's start until the migration is done,
and how long the migration took.
"""

from __future__ import annotations

import tempfile
import threading
import time
import typing as t
from pathlib import Path

from tests.integration.services import connect_psycopg2
from tests.integration.services import wait_until

from . import baselines
from .common import Stack
from .common import live_traffic
from .common import median
from .common import percentile

BLOCK_SECONDS = 10.0
LIVE_PAUSE_SECONDS = 0.02
ROWS = 1000
STEP = ("0001_hot_extra", "ALTER TABLE hot ADD COLUMN IF NOT EXISTS extra integer")


def _scenario(
    stack: Stack, tool: str, migrate: t.Callable[[str], None]
) -> dict[str, t.Any]:
    name = stack.create_database(f"stall_{tool}")
    try:
        stack.postgres.execute(
            "CREATE TABLE hot (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);"
            f"INSERT INTO hot (id) SELECT generate_series(1, {ROWS})",
            dbname=name,
        )
        with stack.proxy() as proxy:
            url = proxy.url(name)
            with live_traffic(url, ROWS, LIVE_PAUSE_SECONDS) as (reads, writes):
                wait_until(
                    lambda: len(reads) >= 20 and len(writes) >= 10,
                    60,
                    0.01,
                    message="live traffic running",
                )
                blocker = connect_psycopg2(stack.direct_url(name))
                blocker.autocommit = False
                blocker.cursor().execute("SELECT count(*) FROM hot")
                window_start = time.perf_counter()
                release = threading.Timer(BLOCK_SECONDS, blocker.commit)
                release.start()
                try:
                    migrate(url)
                    migration_seconds = time.perf_counter() - window_start
                finally:
                    release.join()
                    blocker.close()
                window_end = time.perf_counter()
                done = len(reads) + len(writes)
                wait_until(lambda: len(reads) + len(writes) >= done + 10, 60, 0.01)
    finally:
        stack.drop_database(name)
    # Queries that started in the window, or were still waiting when it opened.
    in_window = [
        latency
        for started, latency in reads + writes
        if started + latency >= window_start and started <= window_end
    ]
    write_lat = [
        latency
        for started, latency in writes
        if started + latency >= window_start and started <= window_end
    ]
    return {
        "tool": tool,
        "queries": len(in_window),
        "p50_ms": median(in_window) * 1000,
        "p99_ms": percentile(in_window, 0.99) * 1000,
        "max_ms": max(in_window, default=0.0) * 1000,
        "writer_p99_ms": percentile(write_lat, 0.99) * 1000,
        "over_1s": sum(1 for x in in_window if x > 1.0),
        "migration_seconds": migration_seconds,
        "timeline": sorted(
            (round(started - window_start, 4), round(latency, 5))
            for started, latency in reads + writes
            if started + latency >= window_start and started <= window_end
        ),
    }


def measure(stack: Stack) -> list[dict[str, t.Any]]:
    """One scenario per tool, each on its own database."""
    registry = baselines.registry_of([STEP])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-alembic-") as tmp:
        alembic_dir = Path(tmp) / "migrations"
        baselines.init_alembic_directory(alembic_dir)
        baselines.write_revisions(alembic_dir, [STEP])
        tools: dict[str, t.Callable[[str], None]] = {
            "safe_migrate": lambda url: baselines.boot_safe_migrate(url, registry),
            "naive": lambda url: baselines.boot_naive(url, [STEP[1]]),
            "alembic": lambda url: baselines.boot_alembic(url, alembic_dir),
        }
        for tool, migrate in tools.items():
            row = _scenario(stack, tool, migrate)
            rows.append(row)
            print(
                f"  stall {tool:<13} max {row['max_ms']:.0f} ms p99 "
                f"{row['p99_ms']:.0f} ms, migration {row['migration_seconds']:.1f} s",
                flush=True,
            )
    return rows
