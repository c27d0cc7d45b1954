"""Backfill throughput against one plain UPDATE, with and without added latency.

For each latency (0 and 5 ms each way at the fault proxy), on fresh 1,000,000-row
tables in the same run, through the same TLS PgBouncer:

- ``plain``: one ``UPDATE items SET v = id * 2`` (the baseline: fastest possible,
  but it locks every row until it commits);
- ``fixed_10k``: keyset batches of 10,000 keys, one transaction each, the usual
  hand-written backfill loop;
- ``safe_migrate``: ``migrate.backfill`` (adaptive batch size, 0.2 s target, the
  checkpoint in each batch's transaction).

While each runs, a writer updates one random row every 10 ms through PgBouncer
(without the proxy's latency: it is the live app), and its latencies are recorded.
Throughput ratio = plain seconds / method seconds (1.0 = as fast as one UPDATE).

Run: ``.venv/bin/python -m benchmarks.backfill_throughput [--rows N]`` (starts its
own PostgreSQL and PgBouncer; each method runs 3 times, interleaved, and the
median is reported; about 3 minutes for 1,000,000 rows).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
import typing as t

from flask_safe_migrate.core.engine import build_migration_engine
from flask_safe_migrate.core.runner import Runner
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import StepRegistry
from tests.integration.services import FaultProxy
from tests.integration.services import PgBouncer
from tests.integration.services import Postgres
from tests.integration.services import connect_psycopg2
from tests.integration.services import wait_until

from .common import write_results

WRITE_EVERY_SECONDS = 0.01
LATENCIES = (0.0, 0.005)
FIXED_BATCH = 10_000


def _plain(url: str, rows: int) -> dict[str, t.Any]:
    conn = connect_psycopg2(url)
    conn.autocommit = True
    conn.cursor().execute("UPDATE items SET v = id * 2")
    conn.close()
    return {"batches": 1}


def _fixed(url: str, rows: int) -> dict[str, t.Any]:
    conn = connect_psycopg2(url)
    conn.autocommit = True
    cur = conn.cursor()
    batches = 0
    for low in range(0, rows, FIXED_BATCH):
        cur.execute(
            "UPDATE items SET v = id * 2 WHERE id > %s AND id <= %s",
            (low, low + FIXED_BATCH),
        )
        batches += 1
    conn.close()
    return {"batches": batches}


def _ours(url: str, rows: int) -> dict[str, t.Any]:
    settings = MigrateSettings(database_uri=url)
    registry = StepRegistry()
    registry.backfill("fill_v", table="items", set="v = id * 2")
    engine = build_migration_engine(settings)
    try:
        Runner(settings, registry, engine).run([Phase.BACKFILL])
    finally:
        engine.dispose()
    return {}


def _ledger_figures(cur: t.Any) -> dict[str, t.Any]:
    """What the ledger recorded of the backfill (read after the timing)."""
    cur.execute("SELECT progress FROM safe_migrate_ledger WHERE step_id = 'fill_v'")
    (progress,) = cur.fetchone()
    return {
        "batches": progress["batches"],
        "max_batch_seconds": progress["max_batch_seconds"],
        "final_batch_size": progress["batch_size"],
    }


METHODS: dict[str, t.Callable[[str, int], dict[str, t.Any]]] = {
    "plain": _plain,
    "fixed_10k": _fixed,
    "safe_migrate": _ours,
}


def _make_table(postgres: Postgres, db: str, rows: int) -> None:
    postgres.create_database(db)
    conn = connect_psycopg2(postgres.url(db))
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, v bigint, w bigint NOT NULL "
        "DEFAULT 0) WITH (fillfactor = 90)"
    )
    cur.execute(
        "INSERT INTO items (id) SELECT g FROM generate_series(1, %s) g", (rows,)
    )
    cur.execute("VACUUM ANALYZE items")
    cur.execute("CHECKPOINT")
    conn.close()


def measure(
    postgres: Postgres,
    bouncer: PgBouncer,
    proxy: FaultProxy,
    method: str,
    latency: float,
    rows: int,
) -> dict[str, t.Any]:
    """Run one method at one latency on a fresh table; return its figures."""
    db = f"bench_fill_{method}_{round(latency * 1000)}"
    _make_table(postgres, db, rows)
    proxy.latency_seconds = latency
    proxy.reset_counters()
    stop = threading.Event()
    waits: list[float] = []

    def writer() -> None:
        conn = connect_psycopg2(bouncer.url(db))
        conn.autocommit = True
        cur = conn.cursor()
        rng = random.Random(1)
        while not stop.is_set():
            started = time.monotonic()
            cur.execute(
                "UPDATE items SET w = w + 1 WHERE id = %s", (rng.randint(1, rows),)
            )
            waits.append(time.monotonic() - started)
            time.sleep(WRITE_EVERY_SECONDS)
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    wait_until(lambda: len(waits) >= 5, 60, 0.01, message="live writer running")
    started = time.monotonic()
    extra = METHODS[method](proxy.url(db), rows)
    seconds = time.monotonic() - started
    stop.set()
    thread.join()
    check = connect_psycopg2(postgres.url(db))
    cur = check.cursor()
    cur.execute("SELECT count(*) FROM items WHERE v = id * 2")
    (done,) = cur.fetchone()  # type: ignore[misc]
    if method == "safe_migrate":
        extra.update(_ledger_figures(cur))
    check.close()
    postgres.drop_database(db)
    if done != rows:
        raise RuntimeError(f"{method}: {done} of {rows} rows updated")
    ordered = sorted(waits)
    return {
        "method": method,
        "latency_ms_each_way": latency * 1000,
        "rows": rows,
        "seconds": seconds,
        "rows_per_second": rows / seconds,
        "round_trips": proxy.round_trips,
        "writer_writes": len(waits),
        "writer_p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000,
        "writer_max_ms": ordered[-1] * 1000,
        "writer_median_ms": statistics.median(ordered) * 1000,
        **extra,
    }


def summarize(results: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    """The median run of each (latency, method), with its ratio to plain."""
    keys = list(dict.fromkeys((r["latency_ms_each_way"], r["method"]) for r in results))
    rows = []
    for latency, method in keys:
        runs = sorted(
            (
                r
                for r in results
                if (r["latency_ms_each_way"], r["method"]) == (latency, method)
            ),
            key=lambda r: r["seconds"],
        )
        rows.append({**runs[len(runs) // 2], "repetitions": len(runs)})
    plain = {
        r["latency_ms_each_way"]: r["seconds"] for r in rows if r["method"] == "plain"
    }
    for r in rows:
        r["throughput_ratio"] = plain[r["latency_ms_each_way"]] / r["seconds"]
        r["writer_max_ms_all_runs"] = max(
            x["writer_max_ms"]
            for x in results
            if (x["latency_ms_each_way"], x["method"])
            == (r["latency_ms_each_way"], r["method"])
        )
    return rows


def render(rows: list[dict[str, t.Any]]) -> str:
    """The Markdown table of :func:`summarize`'s rows."""
    lines = [
        "| latency each way | method | seconds (median) | rows/s | throughput vs "
        "plain UPDATE | batches | round trips | writer p99 ms | writer max ms "
        "(all runs) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['latency_ms_each_way']:.0f} ms | {r['method']} | "
            f"{r['seconds']:.2f} | {r['rows_per_second']:,.0f} | "
            f"{r['throughput_ratio']:.2f} | {r['batches']} | {r['round_trips']} | "
            f"{r['writer_p99_ms']:.1f} | {r['writer_max_ms_all_runs']:.0f} |"
        )
    return "\n".join(lines)


def run(rows: int, repetitions: int = 3) -> list[dict[str, t.Any]]:
    """Start the servers, measure every method at every latency ``repetitions``
    times (interleaved, so a busy moment hits all methods alike), stop them."""
    postgres = Postgres()
    postgres.start()
    bouncer = PgBouncer(postgres)
    bouncer.start()
    proxy = FaultProxy(
        "127.0.0.1",
        bouncer.port,
        cert_file=bouncer.cert_file,
        key_file=bouncer.key_file,
        max_lifetime_seconds=3600,
    )
    proxy.start()
    try:
        return [
            measure(postgres, bouncer, proxy, method, latency, rows)
            for _ in range(repetitions)
            for latency in LATENCIES
            for method in METHODS
        ]
    finally:
        proxy.stop()
        bouncer.stop()
        bouncer.cleanup()
        postgres.stop()
        postgres.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Measure and write benchmarks/results/backfill_throughput.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args(argv)
    results = run(args.rows, args.repetitions)
    rows = summarize(results)
    write_results(
        "backfill_throughput", {"median": rows, "runs": results}, render(rows)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
