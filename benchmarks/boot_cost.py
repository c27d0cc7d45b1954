"""Figures 1 and 2: the cost of a boot, up to date and with every step pending.

For each N, each tool gets its own fresh database. Its first boot through the
latency proxy applies the N pending steps (figure 2, for the N in
``PENDING_COUNTS``; for larger N the database is brought up to date without the
added latency, to keep the run short). Then it boots again ``repeats`` times on
the up-to-date database (figure 1): wall time of the boot (app factory included)
and the Query/Sync messages the proxy counted, plus the connections opened.
"""

from __future__ import annotations

import tempfile
import time
import typing as t
from pathlib import Path

import sqlalchemy as sa

from . import baselines
from .common import LATENCY_SECONDS
from .common import Stack
from .common import median

#: Tools of these figures; ``naive_one_txn`` is the naive script with one commit at
#: the end instead of one per statement (fewer round trips, same statements).
BOOT_TOOLS = ("safe_migrate", "naive", "naive_one_txn", "alembic")
PENDING_COUNTS = (10, 100)

Boot = t.Callable[[str], None]


def _boots(steps: baselines.Steps, alembic_dir: Path) -> dict[str, Boot]:
    registry = baselines.registry_of(steps)
    statements = [sql for _, sql in steps]

    def naive_one_txn(url: str) -> None:
        baselines.boot_naive(url, statements, commit_each=False)

    return {
        "safe_migrate": lambda url: baselines.boot_safe_migrate(url, registry),
        "naive": lambda url: baselines.boot_naive(url, statements),
        "naive_one_txn": naive_one_txn,
        "alembic": lambda url: baselines.boot_alembic(url, alembic_dir),
    }


def _repeats(n: int, tool: str, repeats: int) -> int:
    # The naive script costs 3 round trips per statement on every boot: at N=1000
    # one boot is ~30 s of pure latency, identical from boot to boot.
    if n >= 1000 and tool.startswith("naive"):
        return 1
    return repeats


def measure(
    stack: Stack, counts: t.Sequence[int], *, repeats: int = 3
) -> dict[str, t.Any]:
    """Run figures 1 and 2; return ``{"up_to_date": [...], "pending": [...]}``."""
    up_to_date: list[dict[str, t.Any]] = []
    pending: list[dict[str, t.Any]] = []
    first_connect = _first_connect_round_trips(stack)
    for n in counts:
        steps = baselines.synthetic_steps(n)
        with tempfile.TemporaryDirectory(prefix="bench-alembic-") as tmp:
            alembic_dir = Path(tmp) / "migrations"
            baselines.init_alembic_directory(alembic_dir)
            baselines.write_revisions(alembic_dir, steps)
            for tool, boot in _boots(steps, alembic_dir).items():
                name = stack.create_database(f"boot_{tool}_{n}")
                try:
                    with stack.proxy() as proxy:
                        url = proxy.url(name)
                        if n in PENDING_COUNTS:
                            proxy.reset_counters()
                            started = time.perf_counter()
                            boot(url)
                            seconds = time.perf_counter() - started
                            pending.append(
                                {
                                    "tool": tool,
                                    "n": n,
                                    "seconds": seconds,
                                    "round_trips": proxy.round_trips,
                                    "connections": proxy.connections_opened,
                                    "ms_per_step": seconds * 1000 / n,
                                    "round_trips_per_step": proxy.round_trips / n,
                                }
                            )
                        else:
                            proxy.latency_seconds = 0.0
                            boot(url)
                            proxy.latency_seconds = LATENCY_SECONDS
                        times: list[float] = []
                        trips: list[int] = []
                        conns: list[int] = []
                        for _ in range(_repeats(n, tool, repeats)):
                            proxy.reset_counters()
                            started = time.perf_counter()
                            boot(url)
                            times.append(time.perf_counter() - started)
                            trips.append(proxy.round_trips)
                            conns.append(proxy.connections_opened)
                finally:
                    stack.drop_database(name)
                up_to_date.append(
                    {
                        "tool": tool,
                        "n": n,
                        "boots": len(times),
                        "seconds": median(times),
                        "seconds_all": times,
                        "round_trips": median([float(x) for x in trips]),
                        "connections": median([float(x) for x in conns]),
                    }
                )
                print(
                    f"  boot N={n:<5} {tool:<14} up to date "
                    f"{median(times) * 1000:8.1f} ms  {trips[-1]:5d} round trips",
                    flush=True,
                )
    return {
        "up_to_date": up_to_date,
        "pending": pending,
        "first_connect_round_trips": first_connect,
    }


def _first_connect_round_trips(stack: Stack) -> int:
    """Queries a new SQLAlchemy engine sends on its first connection, alone."""
    name = stack.create_database("boot_connect")
    try:
        with stack.proxy() as proxy:
            engine = sa.create_engine(proxy.url(name))
            try:
                proxy.reset_counters()
                with engine.connect():
                    pass
                return proxy.round_trips
            finally:
                engine.dispose()
    finally:
        stack.drop_database(name)
