"""One process boot of the example app with one tool, for the storm and the soak.

``python -m benchmarks.worker TOOL`` with ``DATABASE_URL`` (and, for alembic,
``BENCH_ALEMBIC_DIR``) set. The boot is what each tool's app factory does:

- safe_migrate: ``example_app.app.create_app()`` with ``SAFE_MIGRATE_ON_BOOT=all``
  (every phase on boot; ``BENCH_EXAMPLE_APP=module:factory`` boots another app);
- naive: :data:`benchmarks.example_baselines.NAIVE_STATEMENTS` through
  ``db.session``, one commit per statement;
- alembic: ``flask_migrate.upgrade()`` of :mod:`benchmarks.alembic_example`.

Prints one JSON line (``{"tool": ..., "boot_seconds": ...}``, with the CPU seconds
of the tool's imports on top of Flask, SQLAlchemy and Flask-SQLAlchemy and of the
boot) and exits 0 when the boot succeeded; any failure propagates (a traceback,
exit 1) as it would in the app.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import typing as t
from pathlib import Path


def example_app_factory() -> str:
    """``BENCH_EXAMPLE_APP`` (``module:factory``), by default the example app's."""
    return os.environ.get("BENCH_EXAMPLE_APP") or "example_app.app:create_app"


def load(tool: str) -> t.Callable[[str], None]:
    """Import what ``tool`` needs and return its boot (URL in)."""
    if tool == "safe_migrate":
        module, _, attr = example_app_factory().partition(":")
        create_app = getattr(importlib.import_module(module), attr)

        def boot_safe_migrate(url: str) -> None:
            create_app({"SQLALCHEMY_DATABASE_URI": url, "SAFE_MIGRATE_ON_BOOT": "all"})

        return boot_safe_migrate
    from . import baselines

    if tool == "naive":
        from .example_baselines import NAIVE_STATEMENTS

        return lambda url: baselines.boot_naive(url, NAIVE_STATEMENTS)
    if tool == "alembic":
        directory = Path(os.environ["BENCH_ALEMBIC_DIR"])
        return lambda url: baselines.boot_alembic(url, directory)
    raise SystemExit(f"unknown tool {tool!r}")


def main(argv: list[str]) -> int:
    """Boot once and report how long the migration part (imports aside) took."""
    tool = argv[0]
    for name in ("flask", "sqlalchemy", "flask_sqlalchemy"):
        importlib.import_module(name)  # what every app has imported already
    cpu = time.process_time()
    boot = load(tool)
    import_cpu = time.process_time() - cpu
    cpu, started = time.process_time(), time.perf_counter()
    boot(os.environ["DATABASE_URL"])
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "tool": tool,
                "boot_seconds": elapsed,
                "import_cpu_seconds": import_cpu,
                "boot_cpu_seconds": time.process_time() - cpu,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
