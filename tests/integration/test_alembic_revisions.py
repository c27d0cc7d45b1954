"""Flask-Migrate revisions as steps via TLS PgBouncer: same schema, once, adopted."""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import textwrap
import typing as t
import uuid
from pathlib import Path

import pytest

from flask_safe_migrate.core import commands
from flask_safe_migrate.core.engine import build_migration_engine
from flask_safe_migrate.core.exceptions import ConfigurationError
from flask_safe_migrate.core.exceptions import StepRefusedError
from flask_safe_migrate.core.runner import Runner
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.steps import StepRegistry
from tests.flask_migrate_app import app as tutorial

from .services import PG_PASSWORD
from .services import PG_USER
from .services import FaultProxy
from .services import Postgres
from .services import TestDatabase
from .services import find_pg_bindir

ROOT = Path(__file__).resolve().parents[2]
REVISIONS = [s.id for s in tutorial.safe_migrate.registry.steps()]
THIRD = REVISIONS[2]
_LEDGER_STEP = re.compile(r"INSERT INTO \"safe_migrate_ledger\" .*? VALUES \('([^']+)'")

_AUDIT = """
CREATE SCHEMA audit;
CREATE TABLE audit.ddl (tag text, identity text);
CREATE FUNCTION audit.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit.ddl
  SELECT command_tag, object_identity FROM pg_event_trigger_ddl_commands()
  WHERE schema_name IS DISTINCT FROM 'audit'
    AND object_identity NOT LIKE '%safe_migrate_ledger%';
END $$;
CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION audit.log_ddl();
"""


def settings_for(url: str, **changes: t.Any) -> MigrateSettings:
    """Settings with quick retries for tests."""
    values: dict[str, t.Any] = {
        "database_uri": url,
        "retry_backoff_seconds": 0.02,
        "retry_backoff_max_seconds": 0.3,
        "retry_max_attempts": 40,
    }
    values.update(changes)
    return MigrateSettings(**values)


def run_revisions(url: str, registry: StepRegistry | None = None) -> list[str]:
    """Apply the tutorial's revisions (or ``registry``) with a runner; statuses."""
    settings = settings_for(url)
    engine = build_migration_engine(settings)
    try:
        report = Runner(
            settings, registry or tutorial.safe_migrate.registry, engine
        ).run()
    finally:
        engine.dispose()
    return [o.status for o in report.outcomes]


def flask(
    database: TestDatabase, *args: str, url: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``flask --app <the tutorial app> ARGS`` as a user would (a subprocess)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": url or database.bouncer_url,
        "SAFE_MIGRATE_ON_BOOT": "off",
    }
    app = "tests.flask_migrate_app.app:create_app"
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", app, *args],
        cwd=ROOT,
        env=env,
        check=check,
        capture_output=True,
        text=True,
        timeout=120,
    )


def flask_db_upgrade(database: TestDatabase, target: str = "head") -> None:
    """Flask-Migrate's ``flask db upgrade`` (straight to PostgreSQL)."""
    flask(database, "db", "upgrade", target, url=database.direct_url)


def schema_dump(postgres: Postgres, dbname: str) -> str:
    """``pg_dump --schema-only`` without either tool's own table, comments dropped."""
    bindir = find_pg_bindir()
    assert bindir is not None
    out = subprocess.run(
        [
            str(bindir / "pg_dump"),
            *("--schema-only", "--no-owner"),
            *("-T", "safe_migrate_ledger", "-T", "alembic_version"),
            *("-h", "127.0.0.1", "-p", str(postgres.port), "-U", PG_USER, dbname),
        ],
        env={**os.environ, "PGPASSWORD": PG_PASSWORD},
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    lines = [
        line
        for line in out.splitlines()
        if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    ]
    return "\n".join(lines)


@pytest.fixture
def other_database(postgres: Postgres) -> t.Iterator[TestDatabase]:
    """A second fresh database, for the tool to compare with."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    try:
        yield TestDatabase(
            name=name, direct_url=postgres.url(name), bouncer_url="", postgres=postgres
        )
    finally:
        postgres.drop_database(name)


def test_revisions_give_the_schema_flask_db_upgrade_gives(
    database: TestDatabase, other_database: TestDatabase
) -> None:
    """Applied through PgBouncer they build what ``flask db upgrade`` builds."""
    assert len(REVISIONS) >= 8
    assert run_revisions(database.bouncer_url) == ["applied"] * len(REVISIONS)
    flask_db_upgrade(other_database)
    ours = schema_dump(database.postgres, database.name)
    assert "CREATE TABLE public.followers" in ours
    assert ours == schema_dump(other_database.postgres, other_database.name)
    for db in (database, other_database):
        assert db.query("SELECT id, name FROM role ORDER BY id") == [
            (1, "admin"),
            (2, "member"),
        ]
    ledger = database.query("SELECT step_id FROM safe_migrate_ledger")
    assert sorted(r[0] for r in ledger) == sorted(REVISIONS)
    assert not database.scalar("SELECT to_regclass('alembic_version') IS NOT NULL")


def _reset(database: TestDatabase) -> None:
    database.query("DROP SCHEMA public CASCADE")
    database.query("CREATE SCHEMA public")
    database.query("TRUNCATE audit.ddl")


def _audit(database: TestDatabase) -> collections.Counter[tuple[str, str]]:
    return collections.Counter(database.query("SELECT tag, identity FROM audit.ddl"))


def test_ten_runs_under_kills_and_a_lost_commit_apply_each_revision_once(
    database: TestDatabase, proxy: FaultProxy
) -> None:
    """Kills every 0.1-0.8 s and one lost COMMIT reply per run: each DDL ran once."""
    database.query(_AUDIT)
    assert run_revisions(database.bouncer_url) == ["applied"] * len(REVISIONS)
    expected = _audit(database)
    assert sum(expected.values()) >= 20
    proxy.latency_seconds = 0.01  # a run lasts long enough for the kills to land
    dropped_at_start = proxy.dropped_commits
    for run in range(10):
        _reset(database)
        lost = REVISIONS[run % len(REVISIONS)]
        commits_seen: list[str] = []

        def commits_lost(
            txn_text: str, lost: str = lost, seen: list[str] = commits_seen
        ) -> bool:
            match = _LEDGER_STEP.search(txn_text)
            if match is None or match.group(1) != lost:
                return False
            seen.append(txn_text)
            return True

        # Every COMMIT of that revision loses its reply, until one has landed: then
        # the retry finds its ledger row. A chaos kill may land between that COMMIT
        # and its reply, leaving no reply to drop: so each run must have sent the
        # COMMIT into the trap, and most runs must have lost its reply.
        proxy.drop_commit_reply(commits_lost)
        proxy.chaos(0.1, 0.8)
        statuses = run_revisions(proxy.url(database.name))
        proxy.chaos_off()
        proxy.drop_commit_reply_off()
        assert statuses == ["applied"] * len(REVISIONS), f"run {run}"
        assert _audit(database) == expected, f"run {run}: DDL ran twice or not at all"
        assert database.query("SELECT count(*) FROM role") == [(2,)]
        assert database.query(
            "SELECT count(*), count(DISTINCT step_id) FROM safe_migrate_ledger"
        ) == [(len(REVISIONS), len(REVISIONS))]
        assert commits_seen, f"run {run}: {lost}'s COMMIT never reached the trap"
    assert proxy.dropped_commits - dropped_at_start >= 7, "lost COMMIT replies"
    assert proxy.kills - proxy.dropped_commits >= 10, "the chaos kills landed"


def test_a_flask_migrate_database_is_adopted_then_the_rest_applies(
    database: TestDatabase,
) -> None:
    """Boot and run stop (exit 2) until ``baseline --from-alembic``; then the rest."""
    flask_db_upgrade(database, THIRD)
    run = flask(database, "safe-migrate", "run", check=False)
    assert run.returncode == 2, run.stderr
    assert "flask safe-migrate baseline --from-alembic" in run.stderr
    assert database.scalar("SELECT to_regclass('safe_migrate_ledger') IS NULL")
    os.environ["DATABASE_URL"] = database.bouncer_url
    try:
        with pytest.raises(ConfigurationError, match="baseline --from-alembic"):
            tutorial.create_app()
        assert not database.scalar("SELECT to_regclass('followers') IS NOT NULL")
        baseline = flask(database, "safe-migrate", "baseline", "--from-alembic")
        assert "3 step(s) recorded as applied" in baseline.stdout
        tutorial.create_app()
    finally:
        del os.environ["DATABASE_URL"]
    rows = database.query("SELECT step_id, attempts FROM safe_migrate_ledger")
    assert sorted(rows) == sorted(
        [(r, 0) for r in REVISIONS[:3]] + [(r, 1) for r in REVISIONS[3:]]
    )
    assert database.scalar("SELECT to_regclass('followers') IS NOT NULL")
    assert database.query("SELECT version_num FROM alembic_version") == [(THIRD,)]


_WORKER = textwrap.dedent(
    """
    import os, sys
    from flask_safe_migrate.core import commands
    from flask_safe_migrate.core.engine import build_migration_engine
    from flask_safe_migrate.core.settings import MigrateSettings
    from tests.flask_migrate_app import app as tutorial

    settings = MigrateSettings(database_uri=os.environ["DATABASE_URL"])
    print("ready", flush=True)
    sys.stdin.readline()  # every process is ready: go together
    engine = build_migration_engine(settings)
    commands.baseline_from_alembic(settings, tutorial.safe_migrate.registry, engine)
    engine.dispose()
    tutorial.create_app()
    """
)


def test_six_processes_baseline_and_boot_together(database: TestDatabase) -> None:
    """Six processes each adopt then boot at once: one ledger row per revision."""
    flask_db_upgrade(database, THIRD)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": database.bouncer_url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    assert [p.stdout.readline() for p in procs if p.stdout] == ["ready\n"] * 6
    results = [(p.communicate("go\n", timeout=120), p.returncode) for p in procs]
    assert [code for _, code in results] == [0] * 6, results
    rows = database.query(
        "SELECT step_id, count(*) FROM safe_migrate_ledger GROUP BY 1"
    )
    assert sorted(rows) == sorted((r, 1) for r in REVISIONS)
    assert database.query("SELECT count(*) FROM role") == [(2,)]


_DATA_REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "{revision}"
down_revision = {down!r}


def upgrade():
    {body}
"""


def _revision_dir(tmp_path: Path, prefix: str, bodies: list[str]) -> Path:
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    down = None
    for number, body in enumerate(bodies, start=1):
        revision = f"{prefix}{number:011d}"
        (versions / f"{revision}_r.py").write_text(
            _DATA_REVISION.format(revision=revision, down=down, body=body)
        )
        down = revision
    return tmp_path / "migrations"


def test_data_changes_and_autocommit_blocks_are_refused_naming_the_file(
    database: TestDatabase, tmp_path: Path
) -> None:
    """DML without a category and autocommit_block() are refused; nothing half-done."""
    from flask_safe_migrate.core.revisions import register_revisions

    directory = _revision_dir(
        tmp_path,
        "a",
        [
            'op.create_table("t", sa.Column("id", sa.Integer, primary_key=True))',
            'op.execute("INSERT INTO t VALUES (1)")',
        ],
    )
    registry = StepRegistry()
    register_revisions(registry, directory)
    with pytest.raises(StepRefusedError, match=r"a00000000002_r\.py.*categories="):
        run_revisions(database.bouncer_url, registry)
    assert database.query("SELECT count(*) FROM t") == [(0,)]

    directory = _revision_dir(
        tmp_path / "2",
        "b",
        [
            "with op.get_context().autocommit_block():\n"
            '        op.create_index("ix", "t", ["id"], postgresql_concurrently=True)',
        ],
    )
    registry = StepRegistry()
    register_revisions(registry, directory)
    with pytest.raises(StepRefusedError, match=r"b00000000001_r\.py.*migrate\.index"):
        run_revisions(database.bouncer_url, registry)
    assert database.scalar("SELECT to_regclass('ix') IS NOT NULL") is False
    ledger = database.query("SELECT step_id FROM safe_migrate_ledger ORDER BY 1")
    assert ledger == [("a00000000001",)]


def test_plan_and_status_show_revisions(database: TestDatabase) -> None:
    """``plan`` renders each revision's SQL offline; ``status`` lists revisions."""
    settings = settings_for(database.bouncer_url)
    engine = build_migration_engine(settings)
    try:
        registry = tutorial.safe_migrate.registry
        plan = commands.plan(settings, registry, engine)
        status = commands.status(settings, registry, engine)
    finally:
        engine.dispose()
    assert [p.step.id for p in plan.steps] == REVISIONS
    assert plan.steps[0].statements[0].startswith('CREATE TABLE "user"')
    assert "INSERT INTO role (id, name) VALUES (1, 'admin')" in plan.steps[7].statements
    assert [(s.step.id, s.state) for s in status.steps] == [
        (r, "pending") for r in REVISIONS
    ]
