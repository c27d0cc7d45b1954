"""Run every comparison figure in one go and write RESULTS.md, the plots and JSON.

``.venv/bin/python -m benchmarks.suite`` (what ``bash benchmarks/run.sh`` runs after
bootstrapping) starts its own PostgreSQL and TLS PgBouncer, measures figures 1-6 of
issue #7 with flask-safe-migrate, the naive startup script and Alembic, and writes
``benchmarks/RESULTS.md``, ``benchmarks/results/comparison.json`` and
``benchmarks/results/fig*.png``. ``--only`` runs some figures (the others are kept
out of RESULTS.md); ``--quick`` uses small sizes to try the machinery (its output
says so).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from . import backfill
from . import boot_cost
from . import boot_storm
from . import chaos_soak
from . import cold_start
from . import example_baselines
from . import live_stall
from . import report
from .common import LATENCY_SECONDS
from .common import RESULTS_DIR
from .common import TOOLS
from .common import collect_versions
from .common import running_stack

FIGURES = ("boot", "stall", "backfill", "storm", "soak", "cold")
COMMAND = "bash benchmarks/run.sh"

FULL = {
    "boot_counts": [10, 100, 1000],
    "boot_repeats": 3,
    "block_seconds": live_stall.BLOCK_SECONDS,
    "backfill_rows": 1_000_000,
    "backfill_repetitions": 3,
    "storm_processes": boot_storm.PROCESSES,
    "soak_runs": 50,
}
QUICK = {
    "boot_counts": [10, 100],
    "boot_repeats": 1,
    "block_seconds": live_stall.BLOCK_SECONDS,
    "backfill_rows": 50_000,
    "backfill_repetitions": 1,
    "storm_processes": 4,
    "soak_runs": 3,
}


def run(figures: t.Sequence[str], sizes: dict[str, t.Any]) -> dict[str, t.Any]:
    """Measure ``figures``; return the results document."""
    started = time.perf_counter()
    results: dict[str, t.Any] = {
        "command": COMMAND,
        "started_at": datetime.datetime.now(datetime.UTC).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        "latency_ms_each_way": LATENCY_SECONDS * 1000,
        "sizes": {
            **sizes,
            "chaos_seconds": list(chaos_soak.CHAOS_SECONDS),
            "soak_max_boots": chaos_soak.MAX_BOOTS,
        },
        "figure_seconds": {},
    }
    with running_stack() as stack, tempfile.TemporaryDirectory() as tmp:
        results["versions"] = collect_versions(stack)
        alembic_dir = Path(tmp) / "migrations"
        example_baselines.prepare_alembic_directory(alembic_dir)
        for figure in figures:
            print(f"figure {figure} ...", flush=True)
            figure_started = time.perf_counter()
            if figure == "boot":
                results["boot"] = boot_cost.measure(
                    stack, sizes["boot_counts"], repeats=sizes["boot_repeats"]
                )
            elif figure == "stall":
                results["stall"] = live_stall.measure(stack)
            elif figure == "backfill":
                results["backfill"] = backfill.measure(
                    stack, sizes["backfill_rows"], sizes["backfill_repetitions"]
                )
            elif figure == "storm":
                results["storm"] = boot_storm.measure(
                    stack, TOOLS, alembic_dir, processes=sizes["storm_processes"]
                )
            elif figure == "cold":
                results["cold"] = cold_start.measure(stack, alembic_dir)
            elif figure == "soak":
                results["soak"] = chaos_soak.measure(
                    stack, TOOLS, alembic_dir, runs=sizes["soak_runs"]
                )
            elapsed = time.perf_counter() - figure_started
            results["figure_seconds"][figure] = elapsed
            print(f"figure {figure}: {elapsed:.0f} s", flush=True)
    results["total_seconds"] = time.perf_counter() - started
    results["setup_seconds"] = float(os.environ.get("BENCH_SETUP_SECONDS") or 0)
    return results


def write(results: t.Mapping[str, t.Any], out: Path = RESULTS_DIR) -> None:
    """Write comparison.json, the plots and RESULTS.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(results, indent=1) + "\n")
    report.write_plots(results, out)
    (out.parent / "RESULTS.md").write_text(report.render_markdown(results))


def main(argv: list[str] | None = None) -> int:
    """Parse the options, measure, write."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--only",
        default=",".join(FIGURES),
        help=f"comma-separated figures among {', '.join(FIGURES)} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes")
    args = parser.parse_args(argv)
    figures = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(figures) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}")
    # flask-safe-migrate's lock-retry warnings would drown the progress lines.
    logging.getLogger("flask_safe_migrate").setLevel(logging.ERROR)
    results = run(figures, dict(QUICK if args.quick else FULL))
    results["quick"] = args.quick
    write(results)
    print(
        f"wrote benchmarks/RESULTS.md, results/comparison.json and plots in "
        f"{results['total_seconds']:.0f} s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
