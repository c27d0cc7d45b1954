"""Figure 5: 16 processes boot the example app at once, per tool.

Each storm starts ``PROCESSES`` copies of :mod:`benchmarks.worker` together, all
through one latency proxy, on a fresh database (every step pending) and on an
up-to-date one (brought there by one undisturbed boot first). Measured: processes
that booted (exit 0), the wall time from the first start to the last exit (16 Python
starts on this machine's cores included, alike for every tool), each process's own
migration time, the round trips of all of them, and the state of the database
afterwards (:mod:`benchmarks.expected`). No process is restarted.
"""

from __future__ import annotations

import json
import subprocess
import time
import typing as t
from pathlib import Path

from . import expected
from .chaos_soak import create_template
from .chaos_soak import error_line
from .chaos_soak import normalize_error
from .common import PYTHON
from .common import ROOT
from .common import Stack
from .common import median
from .common import python_env

PROCESSES = 16
TIMEOUT_SECONDS = 180.0


def _storm(command: list[str], env: dict[str, str], processes: int) -> dict[str, t.Any]:
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    boot_seconds: list[float] = []
    errors: dict[str, int] = {}
    ok = 0
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode == 0:
            ok += 1
            boot_seconds.append(float(json.loads(out.splitlines()[-1])["boot_seconds"]))
        else:
            key = normalize_error(error_line(err)) or f"exit {proc.returncode}"
            errors[key] = errors.get(key, 0) + 1
    return {
        "processes": processes,
        "ok": ok,
        "failed": processes - ok,
        "wall_seconds": time.perf_counter() - started,
        "median_boot_seconds": median(boot_seconds),
        "max_boot_seconds": max(boot_seconds, default=0.0),
        "errors": errors,
    }


def _query(stack: Stack, name: str) -> expected.Query:
    def query(sql: str) -> list[expected.Row]:
        return stack.postgres.execute(sql, dbname=name)

    return query


def measure(
    stack: Stack,
    tools: t.Sequence[str],
    alembic_dir: Path,
    *,
    processes: int = PROCESSES,
) -> list[dict[str, t.Any]]:
    """A fresh and an up-to-date storm per tool; one row each."""
    template = create_template(stack)
    rows: list[dict[str, t.Any]] = []
    try:
        for tool in tools:
            command = [PYTHON, "-m", "benchmarks.worker", tool]
            for state in ("fresh", "up_to_date"):
                name = stack.create_database(f"storm_{tool}", template=template)
                try:
                    with stack.proxy() as proxy:
                        env = python_env(
                            proxy.url(name), BENCH_ALEMBIC_DIR=str(alembic_dir)
                        )
                        if state == "up_to_date":
                            subprocess.run(
                                command,
                                cwd=ROOT,
                                env=env,
                                check=True,
                                timeout=120,
                                capture_output=True,
                            )
                        proxy.reset_counters()
                        row = _storm(command, env, processes)
                        row["round_trips"] = proxy.round_trips
                        row["connections"] = proxy.connections_opened
                    verdict = expected.classify(expected.snapshot(_query(stack, name)))
                finally:
                    stack.drop_database(name)
                row.update(
                    tool=tool,
                    database=state,
                    state=verdict.state,
                    problems=list(verdict.problems),
                    applied_twice=list(verdict.applied_twice),
                )
                rows.append(row)
                print(
                    f"  storm {tool:<13} {state:<10} ok {row['ok']}/{processes} "
                    f"wall {row['wall_seconds']:.1f}s state={verdict.state} "
                    f"twice={len(verdict.applied_twice)} {row['errors']}",
                    flush=True,
                )
    finally:
        stack.drop_database(template)
    return rows
