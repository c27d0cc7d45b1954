"""Figure 6: a cold start on an up-to-date database, CPU time against Alembic's.

A serverless cold start or a new worker pays the tool's imports and its boot run
before the first request. For each tool, :mod:`benchmarks.worker` runs ``RUNS``
times in a fresh process on the example app's up-to-date database (brought there
by one boot first), through the latency proxy. Measured in the process: the CPU
seconds of importing the tool on top of Flask, SQLAlchemy and Flask-SQLAlchemy,
and of the boot; medians.
"""

from __future__ import annotations

import json
import subprocess
import typing as t
from pathlib import Path

from .common import PYTHON
from .common import ROOT
from .common import Stack
from .common import median
from .common import python_env

RUNS = 7
TOOLS = ("safe_migrate", "alembic")


def _worker(tool: str, env: dict[str, str]) -> dict[str, t.Any]:
    done = subprocess.run(
        [PYTHON, "-m", "benchmarks.worker", tool],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    )
    return t.cast(dict[str, t.Any], json.loads(done.stdout.splitlines()[-1]))


def measure(
    stack: Stack, alembic_dir: Path, *, runs: int = RUNS
) -> list[dict[str, t.Any]]:
    """One row per tool: median import CPU, boot CPU and boot wall time."""
    rows = []
    for tool in TOOLS:
        name = stack.create_database(f"cold_{tool}")
        try:
            with stack.proxy() as proxy:
                env = python_env(proxy.url(name), BENCH_ALEMBIC_DIR=str(alembic_dir))
                _worker(tool, env)  # brings the database up to date
                proxy.reset_counters()
                samples = [_worker(tool, env) for _ in range(runs)]
                trips = proxy.round_trips / runs
        finally:
            stack.drop_database(name)
        row = {
            "tool": tool,
            "runs": runs,
            "round_trips_per_boot": trips,
            **{
                key: median([float(s[key]) for s in samples])
                for key in ("import_cpu_seconds", "boot_cpu_seconds", "boot_seconds")
            },
        }
        rows.append(row)
        print(
            f"  cold start {tool:<13} import {row['import_cpu_seconds'] * 1000:.0f} ms "
            f"CPU, boot {row['boot_cpu_seconds'] * 1000:.0f} ms CPU",
            flush=True,
        )
    return rows
