"""Figure 6: the example app's full migration under connection chaos, per tool.

Each run gets a fresh database (made from a template carrying the audit triggers of
:mod:`benchmarks.expected`) and its own fault proxy in front of PgBouncer, which
adds the fixed latency, kills every connection at a random age between
``CHAOS_SECONDS`` and drops the reply of exactly one COMMIT: the k-th COMMIT the tool
sends, with k drawn per run over the commits of an undisturbed run of that tool
(the same relative position for every tool in a given run). The COMMIT reaches the
server; the client sees its connection die instead of the answer.

The tool then runs as a process, as in production: flask-safe-migrate as
``flask --app example_app.app:create_app safe-migrate run`` (every phase, the
release-phase command); naive and Alembic as an app boot
(:mod:`benchmarks.worker`). A process that fails is started again, like a process
supervisor would, up to ``MAX_BOOTS`` times in all; the same rule for every tool.

A run *completed* when a process exited 0 within those boots. Whatever happened,
the database is then compared with the initial and the expected state
(:func:`benchmarks.expected.classify`).
"""

from __future__ import annotations

import concurrent.futures
import random
import re
import subprocess
import sys
import time
import typing as t
from pathlib import Path

from . import expected
from .common import PYTHON
from .common import ROOT
from .common import Stack
from .common import python_env
from .worker import example_app_factory

MAX_BOOTS = 3
BOOT_TIMEOUT_SECONDS = 90.0
CHAOS_SECONDS = (0.1, 0.8)
FLASK = str(Path(sys.executable).parent / "flask")


def create_template(stack: Stack) -> str:
    """A database with the audit schema and event trigger, to copy for each run."""
    name = stack.create_database("soak_template")
    stack.postgres.execute(expected.TEMPLATE_SQL, dbname=name)
    return name


def command(tool: str) -> list[str]:
    """The process that migrates the example app with ``tool``."""
    if tool == "safe_migrate":
        return [FLASK, "--app", example_app_factory(), "safe-migrate", "run"]
    return [PYTHON, "-m", "benchmarks.worker", tool]


_ERROR_LINE = re.compile(r"^(Error: |[\w.]+(Error|Exception|Exit)\b)")


def error_line(stderr: str) -> str:
    """The line of a failed process's stderr that says what went wrong."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            return line[:300]
    return lines[-1][:300] if lines else ""


def normalize_error(line: str) -> str:
    """An error line without its numbers and SQL, so that alike errors count as one."""
    line = re.sub(r"\[SQL:.*", "", line)
    line = re.sub(r"\b\d+\b", "N", line)
    return line.strip()[:160]


def run_once(
    stack: Stack,
    template: str,
    tool: str,
    alembic_dir: Path,
    *,
    seed: int,
    drop_commit: int | None,
    chaos: bool,
) -> dict[str, t.Any]:
    """One run of ``tool`` on a fresh database; return what happened."""
    name = stack.create_database(f"soak_{tool}", template=template)
    commits_seen = 0

    def nth_commit(_transaction: str) -> bool:
        nonlocal commits_seen
        commits_seen += 1
        return commits_seen == drop_commit

    boots: list[dict[str, t.Any]] = []
    started = time.perf_counter()
    try:
        with stack.proxy(seed=seed) as proxy:
            proxy.drop_commit_reply(nth_commit)
            if chaos:
                proxy.chaos(*CHAOS_SECONDS)
            env = python_env(proxy.url(name), BENCH_ALEMBIC_DIR=str(alembic_dir))
            for _ in range(MAX_BOOTS):
                boot_started = time.perf_counter()
                try:
                    proc = subprocess.run(
                        command(tool),
                        cwd=ROOT,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=BOOT_TIMEOUT_SECONDS,
                        check=False,
                    )
                    code, error = proc.returncode, error_line(proc.stderr)
                except subprocess.TimeoutExpired:
                    code, error = -1, f"killed after {BOOT_TIMEOUT_SECONDS:.0f} s"
                boots.append(
                    {
                        "exit": code,
                        "seconds": time.perf_counter() - boot_started,
                        "error": "" if code == 0 else error,
                    }
                )
                if code == 0:
                    break
            kills = proxy.kills
            dropped = proxy.dropped_commits
        snap = expected.snapshot(lambda sql: stack.postgres.execute(sql, dbname=name))
    finally:
        stack.drop_database(name)
    verdict = expected.classify(snap)
    return {
        "tool": tool,
        "seed": seed,
        "completed": any(b["exit"] == 0 for b in boots),
        "first_boot_ok": bool(boots) and boots[0]["exit"] == 0,
        "boots": boots,
        "seconds": time.perf_counter() - started,
        "state": verdict.state,
        "problems": list(verdict.problems),
        "applied_twice": list(verdict.applied_twice),
        "kills": kills,
        "commits_seen": commits_seen,
        "drop_commit": drop_commit,
        "dropped_commits": dropped,
    }


def calibrate(
    stack: Stack, template: str, tools: t.Sequence[str], alembic_dir: Path
) -> dict[str, dict[str, t.Any]]:
    """One undisturbed run per tool: its COMMIT count, and a check of the checker."""
    return {
        tool: run_once(
            stack, template, tool, alembic_dir, seed=0, drop_commit=None, chaos=False
        )
        for tool in tools
    }


def measure(
    stack: Stack,
    tools: t.Sequence[str],
    alembic_dir: Path,
    *,
    runs: int,
) -> dict[str, t.Any]:
    """Calibrate, then ``runs`` chaotic runs of each tool; return every run."""
    template = create_template(stack)
    try:
        clean = calibrate(stack, template, tools, alembic_dir)
        for tool, result in clean.items():
            print(
                f"  soak calibration {tool:<13} state={result['state']} "
                f"commits={result['commits_seen']} "
                f"{'; '.join(result['problems'] + result['applied_twice'])}",
                flush=True,
            )
        results: list[dict[str, t.Any]] = []
        # The tools' n-th runs go side by side (each on its own database and proxy),
        # so they share the machine's load alike.
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(tools)) as pool:
            for number in range(runs):
                position = random.Random(1000 + number).random()
                futures = [
                    pool.submit(
                        run_once,
                        stack,
                        template,
                        tool,
                        alembic_dir,
                        seed=1000 + number,
                        drop_commit=1
                        + int(position * max(1, int(clean[tool]["commits_seen"]))),
                        chaos=True,
                    )
                    for tool in tools
                ]
                for future in futures:
                    result = future.result()
                    result["run"] = number
                    results.append(result)
                if (number + 1) % 10 == 0 or number + 1 == runs:
                    print(f"  soak: {number + 1}/{runs} runs", flush=True)
    finally:
        stack.drop_database(template)
    return {
        "calibration": clean,
        "runs": results,
        "summary": summarize(results, tools),
        "errors": errors_by_tool(results, tools),
    }


def errors_by_tool(
    runs: t.Sequence[t.Mapping[str, t.Any]], tools: t.Sequence[str]
) -> dict[str, dict[str, int]]:
    """Per tool, how often each (normalized) error ended a process."""
    found: dict[str, dict[str, int]] = {tool: {} for tool in tools}
    for run in runs:
        for boot in run["boots"]:
            if boot["exit"] != 0:
                key = normalize_error(boot["error"]) or f"exit {boot['exit']}"
                counts = found[run["tool"]]
                counts[key] = counts.get(key, 0) + 1
    return {
        tool: dict(sorted(c.items(), key=lambda kv: -kv[1]))
        for tool, c in found.items()
    }


def summarize(
    runs: t.Sequence[t.Mapping[str, t.Any]], tools: t.Sequence[str]
) -> list[dict[str, t.Any]]:
    """Per tool: runs, completed, first-boot completions, half-applied, twice."""
    rows = []
    for tool in tools:
        mine = [r for r in runs if r["tool"] == tool]
        rows.append(
            {
                "tool": tool,
                "runs": len(mine),
                "completed": sum(r["completed"] for r in mine),
                "first_boot_ok": sum(r["first_boot_ok"] for r in mine),
                "half_applied": sum(r["state"] == "half" for r in mine),
                "left_initial": sum(r["state"] == "initial" for r in mine),
                "expected_state": sum(r["state"] == "expected" for r in mine),
                "applied_twice_runs": sum(bool(r["applied_twice"]) for r in mine),
                "boots": sum(len(r["boots"]) for r in mine),
                "kills": sum(r["kills"] for r in mine),
                "dropped_commits": sum(r["dropped_commits"] for r in mine),
                "mean_run_seconds": (
                    sum(r["seconds"] for r in mine) / len(mine) if mine else 0.0
                ),
            }
        )
    return rows
