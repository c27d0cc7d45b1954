"""SafeMigrate: init_app, per-app state, step modules and the boot run (no database)."""

from __future__ import annotations

import logging
import typing as t
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.cli import FlaskGroup
from flask.cli import routes_command
from flask.cli import run_command

from flask_safe_migrate import Phase
from flask_safe_migrate import RunReport
from flask_safe_migrate import SafeMigrate
from flask_safe_migrate import StepFailedError
from flask_safe_migrate import StepRegistry
from flask_safe_migrate import extension
from flask_safe_migrate.core import commands
from flask_safe_migrate.core.commands import record_step
from flask_safe_migrate.core.exceptions import ConfigurationError
from flask_safe_migrate.core.exceptions import DuplicateStepError
from flask_safe_migrate.core.phases import StepOutcome
from flask_safe_migrate.extension import get_state
from flask_safe_migrate.extension import is_served


class FakeEngine:
    """Stands in for the migration engine; counts dispose() calls."""

    def __init__(self) -> None:
        self.disposed = 0

    def dispose(self) -> None:
        self.disposed += 1


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """Give the fake engine that build_migration_engine returns in the extension."""
    fake = FakeEngine()
    monkeypatch.setattr(extension, "build_migration_engine", lambda settings: fake)
    return fake


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, t.Any]]:
    """Record calls of commands.run; each applies one step."""
    calls: list[dict[str, t.Any]] = []

    def fake_run(
        settings: t.Any, registry: t.Any, engine: t.Any, **kw: t.Any
    ) -> RunReport:
        calls.append({"engine": engine, **kw})
        report = RunReport(phases=("schema",))
        report.outcomes = [StepOutcome("0001", "schema", "applied")]
        return report

    monkeypatch.setattr(commands, "run", fake_run)
    return calls


def test_state_lives_in_app_extensions(app: Flask) -> None:
    """init_app stores settings and registry per app, never the app on the extension."""
    migrate = SafeMigrate()
    migrate.init_app(app)
    state = get_state(app)
    assert state.registry is migrate.registry
    assert not any(isinstance(v, Flask) for v in vars(migrate).values())


def test_one_extension_serves_two_apps(app: Flask, tmp_path: Path) -> None:
    """The same extension initializes two apps with their own settings."""
    other = Flask("other", instance_path=str(tmp_path / "other"))
    other.config.update(SAFE_MIGRATE_ON_BOOT="off", SAFE_MIGRATE_LEDGER_TABLE="b")
    migrate = SafeMigrate()
    migrate.init_app(app)
    migrate.init_app(other)
    assert get_state(other).settings.ledger_table == "b"
    assert get_state(app).settings.ledger_table == "safe_migrate_ledger"


def test_second_init_app_raises(app: Flask) -> None:
    """Calling init_app twice on one app says what to do instead."""
    migrate = SafeMigrate(app)
    with pytest.raises(RuntimeError, match="once per app"):
        migrate.init_app(app)


def test_get_state_without_init_app_raises(app: Flask) -> None:
    """get_state on an app without the extension explains the missing init_app."""
    with pytest.raises(RuntimeError, match="init_app"):
        get_state(app)


def test_init_app_registers_the_cli_group(app: Flask) -> None:
    """The safe-migrate command group is added to app.cli."""
    SafeMigrate(app)
    assert "safe-migrate" in app.cli.commands


def test_registration_location_is_the_callers_line() -> None:
    """Steps registered through the extension point at the user's file and line."""
    migrate = SafeMigrate()
    step = migrate.sql("0001", "CREATE TABLE a (id int)")
    line = step.location.rsplit(":", 1)

    @migrate.step("0002")
    def second(m: t.Any) -> None:
        m.execute("CREATE TABLE b (id int)")

    assert line[0].endswith("test_extension.py")
    assert int(line[1]) > 0
    assert migrate.registry.get("0002").location.endswith(
        f"test_extension.py:{second.__code__.co_firstlineno}"
    )
    assert migrate.schema is not None


def test_given_registry_is_used() -> None:
    """A registry passed to the constructor receives the steps."""
    registry = StepRegistry()
    SafeMigrate(registry=registry).sql("0001", "CREATE TABLE a (id int)")
    assert "0001" in registry


def test_step_modules_are_imported(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SAFE_MIGRATE_STEP_MODULES are imported during init_app."""
    (tmp_path / "my_steps_mod.py").write_text(
        "import flask_safe_migrate.extension as e\ne.IMPORTED = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(extension, "IMPORTED", False, raising=False)
    app.config["SAFE_MIGRATE_STEP_MODULES"] = ["my_steps_mod"]
    SafeMigrate(app)
    assert extension.IMPORTED is True  # type: ignore[attr-defined]  # set by the module


def test_missing_step_module_is_a_configuration_error(app: Flask) -> None:
    """A step module that cannot be imported names the key."""
    app.config["SAFE_MIGRATE_STEP_MODULES"] = ["no_such_steps_module"]
    with pytest.raises(ConfigurationError, match="SAFE_MIGRATE_STEP_MODULES"):
        SafeMigrate(app)


def test_boot_runs_schema_phase_and_disposes(
    app: Flask,
    engine: FakeEngine,
    runs: list[dict[str, t.Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """on_boot=schema runs the schema phase on the migration engine, then disposes."""
    app.config["SAFE_MIGRATE_ON_BOOT"] = "schema"
    with caplog.at_level(logging.INFO, logger="flask_safe_migrate"):
        SafeMigrate(app)
    assert runs == [{"engine": engine, "phases": [Phase.SCHEMA]}]
    assert engine.disposed == 1
    assert "safe-migrate: 1 step(s) applied" in caplog.text


def test_boot_all_runs_every_phase(
    app: Flask, engine: FakeEngine, runs: list[dict[str, t.Any]]
) -> None:
    """on_boot=all runs schema, index and backfill."""
    app.config["SAFE_MIGRATE_ON_BOOT"] = "all"
    SafeMigrate(app)
    assert runs[0]["phases"] == list(Phase)


def test_boot_off_runs_nothing(
    app: Flask, engine: FakeEngine, runs: list[dict[str, t.Any]]
) -> None:
    """on_boot=off neither builds an engine nor runs."""
    SafeMigrate(app)
    assert runs == []
    assert engine.disposed == 0


def _failing_run(*args: t.Any, **kwargs: t.Any) -> RunReport:
    raise StepFailedError(
        "step 0001 (steps.py:3): boom", step_id="0001", phase="schema"
    )


def test_boot_failure_raise_logs_one_line_and_raises(
    app: Flask,
    engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failed boot run logs one ERROR line, re-raises and still disposes."""
    monkeypatch.setattr(commands, "run", _failing_run)
    app.config["SAFE_MIGRATE_ON_BOOT"] = "schema"
    with pytest.raises(StepFailedError, match="boom"):
        SafeMigrate(app)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "\n" not in errors[0].getMessage()
    assert errors[0].exc_info is None
    assert engine.disposed == 1


def test_boot_failure_log_continues(
    app: Flask,
    engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With boot_failure=log the app starts after logging the failure."""
    monkeypatch.setattr(commands, "run", _failing_run)
    app.config.update(SAFE_MIGRATE_ON_BOOT="schema", SAFE_MIGRATE_BOOT_FAILURE="log")
    SafeMigrate(app)
    assert "safe_migrate" in app.extensions
    assert "boot run failed: step 0001" in caplog.text


def test_boot_never_touches_flask_sqlalchemy(
    app: Flask, engine: FakeEngine, runs: list[dict[str, t.Any]]
) -> None:
    """The db object given to init_app is not used by the boot run."""

    class Untouchable:
        def __getattr__(self, name: str) -> t.NoReturn:
            raise AssertionError(f"db.{name} was used")

    app.config["SAFE_MIGRATE_ON_BOOT"] = "schema"
    SafeMigrate(app, Untouchable())
    assert runs[0]["engine"] is engine


@pytest.mark.parametrize(
    "args", [("routes",), ("--help",), ("db-hello",), ("safe-migrate", "check")]
)
def test_other_flask_commands_do_not_run_the_boot_run(
    app: Flask,
    engine: FakeEngine,
    runs: list[dict[str, t.Any]],
    args: tuple[str, ...],
) -> None:
    """`flask routes`, `flask --help`, an app's own command (`flask db ...`) load
    the app without migrating it (nor building an engine)."""
    app.config["SAFE_MIGRATE_ON_BOOT"] = "schema"
    calls: list[Flask] = []

    def create_app() -> Flask:
        calls.append(app)
        app.cli.command("db-hello")(lambda: None)
        SafeMigrate(app)
        return app

    result = CliRunner().invoke(FlaskGroup(create_app=create_app), list(args))
    assert result.exit_code == 0, result.output
    assert calls == [app]
    assert runs == []
    assert engine.disposed == 0
    if args == ("--help",):
        assert "safe-migrate" in result.output


def test_flask_run_is_served() -> None:
    """Under the flask command only `flask run` serves the app; outside any
    flask command (a WSGI server, a plain create_app()) the app is served."""
    assert is_served()
    flask = FlaskGroup()
    with flask.make_context("flask", ["run"]) as ctx:
        assert not is_served()
        with run_command.make_context("run", [], parent=ctx):
            assert is_served()
        with routes_command.make_context("routes", [], parent=ctx):
            assert not is_served()


def test_sqlite_app_url_skips_the_boot_run_with_one_warning(
    app: Flask,
    runs: list[dict[str, t.Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The sqlite of a test config, without SAFE_MIGRATE_DATABASE_URI, skips the
    boot run with one WARNING line instead of failing."""
    app.config.update(
        SQLALCHEMY_DATABASE_URI="sqlite://", SAFE_MIGRATE_ON_BOOT="schema"
    )
    with caplog.at_level(logging.INFO, logger="flask_safe_migrate"):
        SafeMigrate(app)
    assert runs == []
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.levelno == logging.WARNING
    assert "sqlite, not PostgreSQL" in warning.getMessage()


def test_explicit_non_postgresql_url_still_fails(app: Flask) -> None:
    """A non-PostgreSQL SAFE_MIGRATE_DATABASE_URI is a configuration error."""
    app.config.update(
        SAFE_MIGRATE_DATABASE_URI="sqlite://", SAFE_MIGRATE_ON_BOOT="schema"
    )
    with pytest.raises(ConfigurationError, match="not a PostgreSQL URL"):
        SafeMigrate(app)


def test_boot_says_when_steps_wait_for_the_cli(
    app: Flask,
    engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A boot run that stopped before an index or backfill step logs one line saying
    the rest waits for `flask safe-migrate run`; the app starts."""
    migrate = SafeMigrate()
    waiting = migrate.backfill("0002_fill", table="a", set="x = 1")

    def stopped_run(*args: t.Any, **kw: t.Any) -> RunReport:
        report = RunReport(phases=("schema",))
        report.outcomes = [StepOutcome("0001", "schema", "applied")]
        report.waiting = [waiting]
        return report

    monkeypatch.setattr(commands, "run", stopped_run)
    app.config["SAFE_MIGRATE_ON_BOOT"] = "schema"
    with caplog.at_level(logging.INFO, logger="flask_safe_migrate"):
        migrate.init_app(app)
    lines = [r.getMessage() for r in caplog.records if "wait" in r.getMessage()]
    assert lines == [
        "safe-migrate: 1 step(s) wait for `flask safe-migrate run`, from 0002_fill "
        "(backfill phase) on; the app starts without them"
    ]


def test_duplicate_step_id_is_raised_by_init_app_not_at_import(app: Flask) -> None:
    """Registering a duplicate id does not raise at import time; init_app raises it
    (one line) when the app is served."""
    migrate = SafeMigrate()
    migrate.sql("0001", "CREATE TABLE a (id int)")
    migrate.sql("0001", "CREATE TABLE b (id int)")  # no raise here
    with pytest.raises(DuplicateStepError, match="duplicate step id '0001'") as info:
        migrate.init_app(app)
    assert "\n" not in str(info.value)


def test_backfill_accepts_an_already_quoted_table_name() -> None:
    """table='"user"' is not quoted again; a bare name is quoted for you."""
    migrate = SafeMigrate()
    quoted = migrate.backfill("0001", table='"user"', set="n = 1")
    bare = migrate.backfill("0002", table="app.user", set="n = 1")
    index = migrate.index("0003", table='"user"', columns=["email"])
    assert record_step(quoted)[0].startswith('UPDATE "user" SET n = 1')
    assert record_step(bare)[0].startswith('UPDATE "app"."user" SET')
    assert index.sql is not None
    assert 'INDEX CONCURRENTLY IF NOT EXISTS "user_email_idx" ON "user" ' in index.sql
