"""Live traffic while the models' changes are applied: generate's steps vs Alembic's.

Table ``hot`` (``ROWS`` rows) gets live traffic through TLS PgBouncer: two readers
(``SELECT`` of a random row) and one writer (``UPDATE`` of a random row), each on its
own connection, each query followed by a short pause. A transaction started
directly on the server reads ``hot`` and stays open for ``BLOCK_SECONDS`` (a report,
a long request). Meanwhile the same model changes are applied to ``hot`` (a new
nullable column, a new NOT NULL column with a constant default, an index, a unique
constraint, a foreign key, NOT NULL on an existing column):

- ``safe_migrate``: the module ``generate`` writes, applied by one ``run`` through
  PgBouncer with the default 2 s lock timeout;
- ``alembic``: Alembic's autogenerate operations (what ``flask db migrate`` writes),
  applied as ``flask db upgrade`` does, in one transaction.

Measured: the longest wait of any live query, against the acceptance bound of the
lock timeout + 1 s, how long the changes took, and whether the schema ends equal to
``metadata.create_all()`` (catalogs compared).

Run: ``.venv/bin/python -m benchmarks.generate_live`` (starts its own PostgreSQL and
PgBouncer; about 30 s). Exits 1 when generate's steps break the bound.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

import sqlalchemy as sa

from flask_safe_migrate.core import commands
from flask_safe_migrate.core.engine import build_migration_engine
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import StepRegistry
from tests.integration.catalog import schema_of
from tests.integration.services import PgBouncer
from tests.integration.services import Postgres
from tests.integration.services import TestDatabase
from tests.integration.services import connect_psycopg2

from .common import live_traffic
from .common import percentile
from .common import running_stack
from .common import write_results

ROWS = 200_000
BLOCK_SECONDS = 6.0
LIVE_PAUSE_SECONDS = 0.02
LOCK_TIMEOUT_SECONDS = 2.0
BOUND_SECONDS = LOCK_TIMEOUT_SECONDS + 1.0


def models(after: bool) -> sa.MetaData:
    """The models before the change, or after it."""
    md = sa.MetaData()
    sa.Table("parent", md, sa.Column("id", sa.BigInteger, primary_key=True))
    fk = [sa.ForeignKey("parent.id")] if after else []
    extra = (
        [
            sa.Column("note", sa.Text),
            sa.Column("flag", sa.Boolean, nullable=False, server_default=sa.false()),
            sa.Index("hot_v_idx", "v"),
        ]
        if after
        else []
    )
    sa.Table(
        "hot",
        md,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("parent_id", sa.BigInteger, *fk),
        sa.Column("v", sa.Integer, nullable=False, server_default="0"),
        sa.Column("email", sa.Text, unique=after),
        sa.Column("name", sa.Text, nullable=not after),
        *extra,
    )
    return md


SEED = (
    "INSERT INTO parent SELECT generate_series(1, 1000);"
    f"INSERT INTO hot (id, parent_id, email, name) SELECT i, 1 + mod(i, 1000), "
    f"'u' || i || '@x', 'n' || i FROM generate_series(1, {ROWS}) AS i"
)


def _ours(url: str, after: sa.MetaData, workdir: Path) -> None:
    """generate's module, loaded through the app's registry, applied by one run."""
    package = workdir / "live_steps"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ext.py").write_text(
        "from flask_safe_migrate.core.steps import StepRegistry\n"
        "migrate = StepRegistry()\n"
    )
    sys.path.insert(0, str(workdir))
    registry: StepRegistry = importlib.import_module("live_steps.ext").migrate
    settings = MigrateSettings(
        database_uri=url, lock_timeout_seconds=LOCK_TIMEOUT_SECONDS
    )
    engine = build_migration_engine(settings)
    try:
        report = commands.generate(
            settings,
            registry,
            engine,
            metadata=after,
            message="live changes",
            registrar="live_steps.ext:migrate",
            output=str(package / "0001_live_changes.py"),
        )
        importlib.import_module("live_steps.0001_live_changes")
        assert len(registry) == len(report.steps)
        commands.run(settings, registry, engine, phases=list(Phase))
    finally:
        engine.dispose()
        sys.path.remove(str(workdir))


def _alembic(url: str, after: sa.MetaData, workdir: Path) -> None:
    """Alembic's autogenerate operations, applied in one transaction (``upgrade``)."""
    from alembic.autogenerate import produce_migrations
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            context = MigrationContext.configure(conn)
            script = produce_migrations(context, after)
            operations = Operations(context)
            assert script.upgrade_ops is not None
            for op in script.upgrade_ops.ops:
                for child in getattr(op, "ops", [op]):
                    operations.invoke(child)
    finally:
        engine.dispose()


def measure(
    postgres: Postgres,
    bouncer: PgBouncer,
    tool: str,
    apply: t.Callable[[str, sa.MetaData, Path], None],
) -> dict[str, t.Any]:
    """Apply the changes with ``tool`` under live traffic and a long reader."""
    name = f"bench_generate_{tool}"
    postgres.create_database(name)
    reference = f"{name}_ref"
    postgres.create_database(reference)
    try:
        db = TestDatabase(name, postgres.url(name), bouncer.url(name), postgres)
        sa_engine = sa.create_engine(db.direct_url)
        with sa_engine.begin() as conn:
            models(after=False).create_all(conn)
            conn.exec_driver_sql(SEED)
        sa_engine.dispose()
        with live_traffic(db.bouncer_url, ROWS, LIVE_PAUSE_SECONDS) as (reads, writes):
            blocker = connect_psycopg2(db.direct_url)
            blocker.cursor().execute("SELECT count(*) FROM hot")  # holds ACCESS SHARE
            release = threading.Timer(BLOCK_SECONDS, blocker.commit)
            release.start()
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as workdir:
                apply(db.bouncer_url, models(after=True), Path(workdir))
            seconds = time.perf_counter() - started
            release.join()
        blocker.close()
        ref = TestDatabase(reference, postgres.url(reference), "", postgres)
        sa_engine = sa.create_engine(ref.direct_url)
        with sa_engine.begin() as conn:
            models(after=True).create_all(conn)
        sa_engine.dispose()
        waits = [latency for _, latency in reads + writes]
        return {
            "tool": tool,
            "live_queries": len(waits),
            "max_wait_ms": max(waits) * 1000,
            "p99_wait_ms": percentile(waits, 0.99) * 1000,
            "over_bound": sum(1 for w in waits if w > BOUND_SECONDS),
            "max_write_wait_ms": max(latency for _, latency in writes) * 1000,
            "apply_seconds": seconds,
            "schema_equals_create_all": schema_of(db) == schema_of(ref),
        }
    finally:
        postgres.drop_database(name)
        postgres.drop_database(reference)


def main() -> int:
    """Run both tools; write benchmarks/results/generate_live.{json,md}."""
    with running_stack() as stack:
        rows = [
            measure(stack.postgres, stack.bouncer, "safe_migrate", _ours),
            measure(stack.postgres, stack.bouncer, "alembic", _alembic),
        ]
    lines = [
        f"Bound: lock timeout + 1 s = {BOUND_SECONDS:.1f} s; a reader holds `hot` "
        f"for {BLOCK_SECONDS:.0f} s; {ROWS:,} rows.",
        "",
        "| tool | live queries | max wait ms | p99 ms | over bound | max write ms "
        "| apply s | schema = create_all |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['tool']} | {r['live_queries']} | {r['max_wait_ms']:.0f} | "
            f"{r['p99_wait_ms']:.0f} | {r['over_bound']} | "
            f"{r['max_write_wait_ms']:.0f} | {r['apply_seconds']:.1f} | "
            f"{'yes' if r['schema_equals_create_all'] else 'no'} |"
        )
    write_results("generate_live", rows, "\n".join(lines))
    ours = rows[0]
    held = ours["over_bound"] == 0 and ours["schema_equals_create_all"]
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
