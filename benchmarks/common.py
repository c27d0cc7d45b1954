"""Shared pieces of the comparison benchmarks: the servers, the proxy, statistics."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
import tomllib
import typing as t
import uuid
from importlib import metadata
from pathlib import Path

from tests.integration.services import FaultProxy
from tests.integration.services import PgBouncer
from tests.integration.services import Postgres
from tests.integration.services import connect_psycopg2

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).with_name("results")

#: Added by the fault proxy to every chunk, in each direction: a 10 ms round trip,
#: about what a cloud pooler in the same region costs.
LATENCY_SECONDS = 0.005

Tool = t.Literal["safe_migrate", "naive", "alembic"]
TOOLS: tuple[Tool, ...] = ("safe_migrate", "naive", "alembic")


def write_results(name: str, data: object, table: str) -> None:
    """Write ``results/<name>.json`` (``data``) and ``results/<name>.md`` (``table``),
    and print the table."""
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS_DIR / f"{name}.md").write_text(table + "\n")
    print(table)


def percentile(values: t.Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * (len(ordered) - 1))))
    return ordered[rank]


def median(values: t.Sequence[float]) -> float:
    """The median of ``values`` (nearest rank); 0.0 when empty."""
    return percentile(values, 0.5)


@dataclasses.dataclass
class Stack:
    """A private PostgreSQL and a TLS, transaction-pooling PgBouncer in front of it."""

    postgres: Postgres
    bouncer: PgBouncer

    def create_database(self, prefix: str, *, template: str | None = None) -> str:
        """Create a fresh database named ``prefix_<hex>`` and return its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        if template is None:
            self.postgres.create_database(name)
        else:
            self.postgres.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending its sessions (PgBouncer's too)."""
        self.postgres.drop_database(name)

    def direct_url(self, name: str) -> str:
        """URL of ``name`` straight to PostgreSQL (for setup and checks only)."""
        return self.postgres.url(name)

    @contextlib.contextmanager
    def proxy(
        self, *, latency_seconds: float = LATENCY_SECONDS, seed: int = 0
    ) -> t.Iterator[FaultProxy]:
        """A started fault proxy in front of PgBouncer, adding ``latency_seconds``."""
        fault_proxy = FaultProxy(
            "127.0.0.1",
            self.bouncer.port,
            cert_file=self.bouncer.cert_file,
            key_file=self.bouncer.key_file,
            seed=seed,
            max_lifetime_seconds=3600.0,
        )
        fault_proxy.latency_seconds = latency_seconds
        with fault_proxy:
            yield fault_proxy


#: The live traffic on table ``hot``: two readers and one writer of a random row.
LIVE_QUERIES = (
    "SELECT v FROM hot WHERE id = %s",
    "SELECT v FROM hot WHERE id = %s",
    "UPDATE hot SET v = v + 1 WHERE id = %s",
)

#: ``(started, latency)`` of each live query, ``perf_counter`` seconds.
Timings = list[tuple[float, float]]


def _live_loop(
    url: str, sql: str, rows: int, pause: float, stop: threading.Event, out: Timings
) -> None:
    """Run ``sql`` on a random id in 1..``rows``, pausing ``pause``, until ``stop``."""
    conn = connect_psycopg2(url)
    conn.autocommit = True
    rng = random.Random(sql)
    try:
        with conn.cursor() as cur:
            while not stop.is_set():
                started = time.perf_counter()
                cur.execute(sql, (rng.randint(1, rows),))
                out.append((started, time.perf_counter() - started))
                time.sleep(pause)
    finally:
        conn.close()


@contextlib.contextmanager
def live_traffic(
    url: str, rows: int, pause: float
) -> t.Iterator[tuple[Timings, Timings]]:
    """Run :data:`LIVE_QUERIES` on ``hot``, each on its own connection, while inside.

    Yields the readers' and the writer's timings, which grow as the queries run;
    leaving the block stops the loops and joins them.
    """
    stop = threading.Event()
    reads: Timings = []
    writes: Timings = []
    threads = [
        threading.Thread(
            target=_live_loop,
            args=(
                url,
                sql,
                rows,
                pause,
                stop,
                writes if sql.startswith("UPDATE") else reads,
            ),
        )
        for sql in LIVE_QUERIES
    ]
    for thread in threads:
        thread.start()
    try:
        yield reads, writes
    finally:
        stop.set()
        for thread in threads:
            thread.join()


@contextlib.contextmanager
def running_stack() -> t.Iterator[Stack]:
    """Start PostgreSQL and PgBouncer for the benchmark run; stop them afterwards."""
    postgres = Postgres()
    postgres.start()
    try:
        bouncer = PgBouncer(postgres)
        bouncer.start()
        try:
            yield Stack(postgres, bouncer)
        finally:
            bouncer.cleanup()
    finally:
        postgres.cleanup()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _project_version() -> str:
    try:
        return metadata.version("flask-safe-migrate")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        with (ROOT / "pyproject.toml").open("rb") as f:
            return str(tomllib.load(f)["project"]["version"])


def _command_output(command: list[str]) -> str:
    try:
        result = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return ""
    return (result.stdout or result.stderr).strip()


def collect_versions(stack: Stack) -> dict[str, str]:
    """Versions of everything measured, and where the code came from."""
    server = stack.postgres.execute("SHOW server_version")[0][0]
    bouncer = _command_output([stack.bouncer.binary, "--version"]).splitlines()
    sha = _command_output(["git", "rev-parse", "--short=12", "HEAD"])
    dirty = _command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "flask-safe-migrate": f"{_project_version()} "
        f"(git {sha or 'unknown'}{', uncommitted changes' if dirty else ''})",
        "PostgreSQL": str(server),
        "PgBouncer": bouncer[0] if bouncer else "unknown",
        "Python": platform.python_version(),
        "SQLAlchemy": _version("sqlalchemy"),
        "psycopg2": _version("psycopg2-binary"),
        "Flask": _version("flask"),
        "Flask-SQLAlchemy": _version("flask-sqlalchemy"),
        "Alembic": _version("alembic"),
        "Flask-Migrate": _version("flask-migrate"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU(s)",
    }


def python_env(url: str, **extra: str) -> dict[str, str]:
    """Environment of a benchmark subprocess: no SAFE_MIGRATE_* from the shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFE_MIGRATE_")}
    env["DATABASE_URL"] = url
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


PYTHON = sys.executable
