"""The boot run: before the first request, never through the app's engine, no leaks."""

from __future__ import annotations

import os
import subprocess
import sys
import typing as t
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.cli import FlaskGroup
from flask_sqlalchemy import SQLAlchemy

from flask_safe_migrate import SafeMigrate
from flask_safe_migrate import StepFailedError
from flask_safe_migrate import build_migration_engine
from flask_safe_migrate import extension
from flask_safe_migrate.core import commands
from flask_safe_migrate.core import steps as steps_module
from flask_safe_migrate.core.runner import Runner
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import StepRegistry

from .services import PG_PASSWORD
from .services import FaultProxy
from .services import TestDatabase
from .services import free_port
from .services import wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LEDGER = "SELECT count(*) FROM safe_migrate_ledger"
MIGRATION_BACKENDS = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'safe-migrate'"
)


def _make_app(
    tmp_path: Path, migration_url: str, app_url: str
) -> tuple[Flask, list[int]]:
    """Return an app whose boot run creates a table, and its engine's connects."""
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=app_url, SAFE_MIGRATE_DATABASE_URI=migration_url
    )
    db = SQLAlchemy()
    db.init_app(app)
    connects: list[int] = []
    with app.app_context():
        sa.event.listen(db.engine, "connect", lambda *a: connects.append(1))
    migrate = SafeMigrate()
    migrate.sql(
        "0001_notes", "CREATE TABLE notes (id bigserial PRIMARY KEY, body text)"
    )
    migrate.sql("0002_notes_at", "ALTER TABLE notes ADD COLUMN at timestamptz")
    migrate.init_app(app, db)

    @app.get("/notes")
    def notes() -> dict[str, t.Any]:
        count = db.session.execute(sa.text("SELECT count(*) FROM notes")).scalar()
        return {"count": count}

    return app, connects


class Sockets:
    """Counts the DBAPI connections the migration engines open and close."""

    def __init__(self) -> None:
        self.engines: list[sa.Engine] = []
        self.opened = 0
        self.closed = 0

    def watch(self, engine: sa.Engine) -> None:
        self.engines.append(engine)
        sa.event.listen(engine, "connect", lambda *a: self._count("opened"))
        sa.event.listen(engine, "close", lambda *a: self._count("closed"))
        sa.event.listen(engine, "close_detached", lambda *a: self._count("closed"))

    def _count(self, name: str) -> None:
        setattr(self, name, getattr(self, name) + 1)


@pytest.fixture
def sockets(monkeypatch: pytest.MonkeyPatch) -> Sockets:
    """Watch the migration engines the boot run builds."""
    built = Sockets()
    real = build_migration_engine

    def build(settings: t.Any) -> sa.Engine:
        engine = real(settings)
        built.watch(engine)
        return engine

    monkeypatch.setattr(extension, "build_migration_engine", build)
    return built


def test_boot_runs_before_first_request_without_app_engine(
    database: TestDatabase,
    tmp_path: Path,
    sockets: Sockets,
    engines: list[sa.Engine],
) -> None:
    """init_app applies the steps on its own engine; the app's engine opens nothing."""
    app, connects = _make_app(tmp_path, database.bouncer_url, database.direct_url)
    assert connects == []
    assert database.scalar(LEDGER) == 2
    assert len(sockets.engines) == 1
    assert sockets.opened >= 1
    assert sockets.closed == sockets.opened  # the pool was disposed
    assert app.test_client().get("/notes").json == {"count": 0}
    assert connects == [1]
    with app.app_context():  # its pool keeps the request's connection open
        engines.append(app.extensions["sqlalchemy"].engine)


def test_boot_leaves_no_migration_connection(
    database: TestDatabase, tmp_path: Path, sockets: Sockets
) -> None:
    """After a direct-URL boot run no safe-migrate backend is left on the server."""
    _make_app(tmp_path, database.direct_url, database.direct_url)
    wait_until(
        lambda: database.scalar(MIGRATION_BACKENDS) == 0,
        5,
        message="no safe-migrate backend",
    )
    assert sockets.closed == sockets.opened


def test_second_boot_is_up_to_date(
    database: TestDatabase,
    tmp_path: Path,
    sockets: Sockets,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second app booting on a migrated database applies nothing."""
    _make_app(tmp_path, database.bouncer_url, database.direct_url)
    caplog.set_level("INFO", logger="flask_safe_migrate")
    _make_app(tmp_path, database.bouncer_url, database.direct_url)
    assert "safe-migrate: up to date" in caplog.text
    assert database.scalar(LEDGER) == 2


def test_on_boot_all_runs_the_index_and_backfill_phases_too(
    database: TestDatabase, tmp_path: Path
) -> None:
    """SAFE_MIGRATE_ON_BOOT=all: schema, then index, then backfill, before serving;
    the default (schema) leaves the other two phases to the CLI."""
    database.postgres.execute(
        "CREATE TABLE notes (id bigserial PRIMARY KEY, body text); "
        "INSERT INTO notes (body) SELECT 'x' FROM generate_series(1, 500)",
        dbname=database.name,
    )
    steps: list[tuple[str, str]] = []
    for on_boot in ("schema", "all"):
        app = Flask(__name__, instance_path=str(tmp_path / on_boot))
        app.config.update(
            SAFE_MIGRATE_DATABASE_URI=database.bouncer_url,
            SAFE_MIGRATE_ON_BOOT=on_boot,
        )
        migrate = SafeMigrate()
        migrate.sql("0001_notes_n", "ALTER TABLE notes ADD COLUMN n int")
        migrate.index("0002_notes_body", table="notes", columns=["body"])
        migrate.backfill("0003_notes_n", table="notes", set="n = 1", where="n IS NULL")
        migrate.init_app(app)
        steps.append(
            (
                on_boot,
                ",".join(
                    r[0]
                    for r in database.query(
                        "SELECT step_id FROM safe_migrate_ledger "
                        "WHERE state = 'applied' "
                        "ORDER BY applied_at"
                    )
                ),
            )
        )
    assert steps == [
        ("schema", "0001_notes_n"),
        ("all", "0001_notes_n,0002_notes_body,0003_notes_n"),
    ]
    assert database.scalar("SELECT count(*) FROM notes WHERE n = 1") == 500


def test_up_to_date_boot_sends_one_query_after_login(
    database: TestDatabase, tmp_path: Path, proxy: FaultProxy, proxy_url: str
) -> None:
    """A boot with nothing pending sends one query message after login, in all: no
    dialect initialization queries, no BEGIN/ROLLBACK (issue 15, item 1)."""
    _make_app(tmp_path, database.bouncer_url, database.direct_url)
    proxy.reset_counters()
    _make_app(tmp_path, proxy_url, database.direct_url)
    assert proxy.connections_opened == 1
    assert proxy.round_trips == 1
    assert database.scalar(LEDGER) == 2


def test_up_to_date_run_status_and_plan_send_one_query_each(
    database: TestDatabase, proxy: FaultProxy, proxy_url: str, engines: list[sa.Engine]
) -> None:
    """``run``, ``status`` and ``plan`` on an up-to-date database: one query each,
    counted from a fresh engine (login included), and the ledger is unchanged."""
    registry = StepRegistry()
    registry.sql("0001_t", "CREATE TABLE t (id int)")
    registry.index("0002_i", table="t", columns=["id"])
    registry.backfill("0003_b", table="t", set="id = id")
    settings = MigrateSettings(database_uri=database.bouncer_url)
    first = build_migration_engine(settings)
    engines.append(first)
    Runner(settings, registry, first).run(phases=tuple(Phase))
    calls: list[t.Callable[[sa.Engine], object]] = [
        lambda e: Runner(settings, registry, e).run(phases=tuple(Phase)),
        lambda e: commands.status(settings, registry, e),
        lambda e: commands.plan(settings, registry, e),
    ]
    for call in calls:
        engine = build_migration_engine(settings, url=proxy_url)
        engines.append(engine)
        proxy.reset_counters()
        call(engine)
        assert (proxy.connections_opened, proxy.round_trips) == (1, 1)
    assert database.scalar(f"{LEDGER} WHERE state = 'applied'") == 3


def test_a_boot_with_nothing_pending_imports_no_parser(
    database: TestDatabase, tmp_path: Path
) -> None:
    """Booting the example app on an up-to-date database imports neither pglast
    nor the linter (issue 15, item 4), in a fresh process."""
    code = (
        "import sys\n"
        "from example_app.app import create_app\n"
        "create_app()\n"
        "loaded = [m for m in ('pglast', 'flask_safe_migrate.core.lint') "
        "if m in sys.modules]\n"
        "print('loaded:', loaded)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFE_MIGRATE_")}
    env["DATABASE_URL"] = database.bouncer_url
    root = Path(__file__).resolve().parents[2]
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert "'pglast'" in outputs[0]  # the first boot applied (so parsed) steps
    assert "loaded: []" in outputs[1], outputs[1]


def _two_steps(second: str = "ALTER TABLE t ADD COLUMN b int") -> StepRegistry:
    registry = StepRegistry()
    registry.sql("0001_t", "CREATE TABLE t (a int)")
    registry.sql("0002_b", second)
    return registry


def test_ledger_of_an_older_version_gets_text_checksums_once(
    database: TestDatabase,
    proxy: FaultProxy,
    proxy_url: str,
    engines: list[sa.Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ledger without the text_checksum column reads as before; the first run
    adds the column and records the text checksums of the rows whose normalized
    checksum matches (one message); later runs compare without parsing."""
    settings = MigrateSettings(database_uri=database.bouncer_url)

    def run(registry: StepRegistry) -> int:
        engine = build_migration_engine(settings, url=proxy_url)
        engines.append(engine)
        proxy.reset_counters()
        assert Runner(settings, registry, engine).run().up_to_date
        return proxy.round_trips

    first = build_migration_engine(settings)
    engines.append(first)
    assert len(Runner(settings, _two_steps(), first).run().applied) == 2
    database.query("ALTER TABLE safe_migrate_ledger DROP COLUMN text_checksum")
    before = database.query("SELECT step_id, checksum FROM safe_migrate_ledger")
    # Whitespace only: the same normalized checksum, another text checksum.
    assert run(_two_steps("ALTER TABLE t\n  ADD COLUMN b int")) == 2
    rows = database.query(
        "SELECT step_id, checksum, text_checksum FROM safe_migrate_ledger"
    )
    assert sorted((r[0], r[1]) for r in rows) == sorted(before)
    assert all(r[2] for r in rows)

    def no_parsing(sql: str) -> str:
        raise AssertionError(f"parsed {sql!r}")

    monkeypatch.setattr(steps_module, "normalize_sql", no_parsing)
    assert run(_two_steps("ALTER TABLE t\n  ADD COLUMN b int")) == 1


APP_MODULE = """
from flask import Flask
from flask_safe_migrate import SafeMigrate

migrate = SafeMigrate()
migrate.sql("0001_notes", "CREATE TABLE notes (id bigserial PRIMARY KEY)")
{extra}


def create_app():
    app = Flask(__name__)
    app.config.update(SAFE_MIGRATE_DATABASE_URI={url!r}, {config})
    migrate.init_app(app)

    @app.get("/notes")
    def notes():
        return {{}}

    return app
"""


def _flask(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `flask --app MODULE ARGS` on an app module written to tmp_path."""
    (tmp_path / "boot_app_mod.py").write_text(module)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAFE_", "FLASK_"))}
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT}"
    return subprocess.run(
        [str(BIN / "flask"), "--app", "boot_app_mod:create_app", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _unreachable_url() -> str:
    return f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{free_port()}/x"


@pytest.mark.parametrize(
    ("args", "output"),
    [(("--help",), "safe-migrate"), (("routes",), "/notes")],
)
def test_flask_commands_other_than_run_never_touch_the_database(
    tmp_path: Path, args: tuple[str, ...], output: str
) -> None:
    """With the database unreachable, `flask --help` lists the command groups and
    `flask routes` prints the routes, exit 0: no boot run, no retry, no traceback."""
    module = APP_MODULE.format(
        extra="",
        url=_unreachable_url(),
        config="SAFE_MIGRATE_RETRY_MAX_ATTEMPTS=2, SAFE_MIGRATE_ON_BOOT='schema'",
    )
    result = _flask(tmp_path, module, *args)
    assert result.returncode == 0, result.stderr
    assert output in result.stdout
    assert "Traceback" not in result.stderr
    assert "retry" not in result.stderr


def test_duplicate_step_id_at_import_time_is_one_line_exit_2(
    tmp_path: Path,
) -> None:
    """A duplicate id registered at import time of the app module: the command says
    so in one line, exit 2 (no traceback), and `flask routes` still works."""
    module = APP_MODULE.format(
        extra='migrate.sql("0001_notes", "CREATE TABLE other (id int)")',
        url=_unreachable_url(),
        config="SAFE_MIGRATE_RETRY_MAX_ATTEMPTS=2",
    )
    result = _flask(tmp_path, module, "safe-migrate", "status")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("Error: duplicate step id '0001_notes'")
    assert "boot_app_mod.py:6" in result.stderr
    assert _flask(tmp_path, module, "routes").returncode == 0


def test_boot_on_a_database_migrated_by_another_tool_says_to_baseline(
    database: TestDatabase, tmp_path: Path
) -> None:
    """A boot run whose step finds its table already there (DuplicateTable) fails
    saying to adopt the database with `baseline`; nothing is recorded."""
    database.query("CREATE TABLE notes (id bigserial PRIMARY KEY, body text)")
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(SAFE_MIGRATE_DATABASE_URI=database.bouncer_url)
    migrate = SafeMigrate()
    migrate.sql("0001_notes", "CREATE TABLE notes (id bigserial PRIMARY KEY)")
    with pytest.raises(StepFailedError, match="DuplicateTable") as info:
        migrate.init_app(app)
    assert "flask safe-migrate baseline" in str(info.value)
    assert "\n" not in str(info.value)
    assert database.scalar("SELECT count(*) FROM safe_migrate_ledger") == 0


def test_flask_run_applies_the_schema_before_serving(
    database: TestDatabase, tmp_path: Path
) -> None:
    """`flask run` serves the app, so its boot run applies the schema steps."""
    module = APP_MODULE.format(extra="", url=database.bouncer_url, config="")
    (tmp_path / "boot_app_mod.py").write_text(module)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAFE_", "FLASK_"))}
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT}"
    port = free_port()
    server = subprocess.Popen(
        [
            str(BIN / "flask"),
            "--app",
            "boot_app_mod:create_app",
            "run",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _answers(port), 60, message="flask run answers")
        assert database.scalar(LEDGER) == 1
        assert database.scalar("SELECT to_regclass('notes')") == "notes"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/notes") as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def test_boot_stops_before_a_backfill_and_says_the_rest_waits(
    database: TestDatabase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Expand/contract (add a column, backfill it, SET NOT NULL): the boot run
    applies the first schema step, stops before the backfill, says so in one line
    and the app starts; `flask safe-migrate run` then does the rest in order."""
    database.query(
        "CREATE TABLE notes (id bigserial PRIMARY KEY, body text); "
        "INSERT INTO notes (body) SELECT 'x' FROM generate_series(1, 50)"
    )
    migrate = SafeMigrate()
    migrate.sql("0001_notes_n", "ALTER TABLE notes ADD COLUMN n int")
    migrate.backfill("0002_notes_n", table="notes", set="n = 1", where="n IS NULL")
    migrate.sql("0003_notes_n_not_null", "ALTER TABLE notes ALTER n SET NOT NULL")

    def create_app() -> Flask:
        app = Flask(__name__, instance_path=str(tmp_path / "instance"))
        app.config.update(SAFE_MIGRATE_DATABASE_URI=database.bouncer_url)
        migrate.init_app(app)
        return app

    caplog.set_level("INFO", logger="flask_safe_migrate")
    create_app()
    waits = [
        r
        for r in caplog.records
        if "wait for `flask safe-migrate run`" in r.getMessage()
    ]
    assert [r.getMessage() for r in waits] == [
        "safe-migrate: 2 step(s) wait for `flask safe-migrate run`, from 0002_notes_n "
        "(backfill phase) on; the app starts without them"
    ]
    assert database.scalar(LEDGER) == 1
    result = CliRunner().invoke(FlaskGroup(create_app=create_app), ["safe-migrate"])
    assert result.exit_code == 0, result.output
    assert [line.split()[1] for line in result.stdout.splitlines()[:2]] == [
        "0002_notes_n",
        "0003_notes_n_not_null",
    ]
    assert database.scalar("SELECT count(*) FROM notes WHERE n = 1") == 50
    assert database.scalar(LEDGER) == 3
