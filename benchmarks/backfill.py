"""Figure 4: a 1,000,000-row backfill, through :mod:`benchmarks.backfill_throughput`.

The measurement is that module's ``measure()`` (one plain ``UPDATE``, hand-written
10,000-key batches, and ``migrate.backfill``), run here at the suite's latency on the
suite's servers. Both baselines of the other figures backfill with the plain
``UPDATE`` (naive: a statement of the startup script; Alembic: ``op.execute`` in a
revision), so that is the baseline of this figure.
"""

from __future__ import annotations

import typing as t

from . import backfill_throughput
from .common import LATENCY_SECONDS
from .common import Stack

METHODS = ("plain", "fixed_10k", "safe_migrate")


def measure(stack: Stack, rows: int, repetitions: int = 3) -> dict[str, t.Any]:
    """Each method ``repetitions`` times (interleaved) on fresh ``rows``-row tables.

    Returns the raw ``runs`` and, per method, the median run (``summary``, with its
    ``throughput_ratio`` to the plain UPDATE), as ``backfill_throughput`` reports.
    """
    runs = []
    with stack.proxy() as proxy:
        for _ in range(repetitions):
            for method in METHODS:
                result = backfill_throughput.measure(
                    stack.postgres, stack.bouncer, proxy, method, LATENCY_SECONDS, rows
                )
                runs.append(result)
                print(
                    f"  backfill {method:<13} {result['seconds']:.2f} s "
                    f"writer p99 {result['writer_p99_ms']:.1f} ms",
                    flush=True,
                )
    return {"runs": runs, "summary": backfill_throughput.summarize(runs)}
