"""Bad input through the real ``flask safe-migrate`` command: exit code and one line."""

from __future__ import annotations

import dataclasses
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from click.testing import Result
from flask import Flask
from flask.cli import FlaskGroup
from flask_sqlalchemy import SQLAlchemy

from flask_safe_migrate import SafeMigrate

from .services import PG_PASSWORD
from .services import TestDatabase
from .services import free_port

GOOD_STEP = ("0001_t", "CREATE TABLE t (id int)")


@dataclasses.dataclass
class Case:
    """One row of the table: config, steps and arguments, and what must come out."""

    name: str
    config: t.Callable[[TestDatabase], dict[str, t.Any]]
    args: tuple[str, ...]
    exit_code: int
    message: str
    steps: tuple[tuple[str, str], ...] = (GOOD_STEP,)


def invoke(
    tmp_path: Path,
    config: dict[str, t.Any],
    steps: t.Sequence[tuple[str, str]],
    args: t.Sequence[str],
) -> Result:
    """Run `flask safe-migrate ARGS` in-process, the app loaded by the flask group."""

    def create_app() -> Flask:
        app = Flask("e2e", instance_path=str(tmp_path / "instance"))
        app.config.update(config)
        migrate = SafeMigrate()
        for step_id, sql in steps:
            migrate.sql(step_id, sql)
        migrate.init_app(app)
        return app

    return CliRunner().invoke(
        FlaskGroup(create_app=create_app), ["safe-migrate", *args]
    )


def _url(database: TestDatabase, **config: t.Any) -> dict[str, t.Any]:
    return {"SAFE_MIGRATE_DATABASE_URI": database.bouncer_url, **config}


def _unreachable(database: TestDatabase) -> dict[str, t.Any]:
    return {
        "SAFE_MIGRATE_DATABASE_URI": (
            f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{free_port()}/x"
        ),
        "SAFE_MIGRATE_RETRY_MAX_ATTEMPTS": 2,
        "SAFE_MIGRATE_RETRY_BACKOFF_SECONDS": 0.01,
        "SAFE_MIGRATE_CONNECT_TIMEOUT_SECONDS": 2,
    }


def _wrong_password(database: TestDatabase) -> dict[str, t.Any]:
    url = database.direct_url.replace(PG_PASSWORD, "not-the-password")
    return {"SAFE_MIGRATE_DATABASE_URI": url, "SAFE_MIGRATE_RETRY_MAX_ATTEMPTS": 2}


CASES = [
    Case(
        "bad config value",
        lambda db: _url(db, SAFE_MIGRATE_ON_BOOT="sometimes"),
        ("run",),
        2,
        "Error: SAFE_MIGRATE_ON_BOOT: must be one of schema, all, off",
    ),
    Case(
        "malformed URL",
        lambda db: {
            "SAFE_MIGRATE_DATABASE_URI": f"postgresql://u:{PG_PASSWORD}@h:port/db"
        },
        ("status",),
        2,
        "Error: SAFE_MIGRATE_DATABASE_URI: malformed database URL",
    ),
    Case("unreachable host", _unreachable, ("run",), 5, "Error: cannot"),
    Case("wrong password", _wrong_password, ("status",), 5, "password authentication"),
    Case(
        "non-PostgreSQL URL",
        lambda db: {"SAFE_MIGRATE_DATABASE_URI": "sqlite://"},
        ("run",),
        2,
        "is not a PostgreSQL URL",
    ),
    Case(
        "invalid SQL step",
        _url,
        ("run",),
        1,
        "step 0002_bad",
        steps=(GOOD_STEP, ("0002_bad", "CREATE TABLE (")),
    ),
    Case("--phase typo", _url, ("run", "--phase", "shema"), 2, "'shema'"),
    Case(
        "exec syntax error",
        _url,
        ("exec", "SELEC 1"),
        1,
        "Error: statement failed",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, database: TestDatabase, tmp_path: Path) -> None:
    """Each bad input exits with its code and says why in one line, password hidden."""
    result = invoke(tmp_path, case.config(database), case.steps, case.args)
    assert result.exit_code == case.exit_code, result.output
    assert case.message in result.stderr
    lines = result.stderr.splitlines()
    error_lines = [line for line in lines if line.startswith("Error:")]
    assert len(error_lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert PG_PASSWORD not in result.output
    retries = [line for line in lines if line.startswith("retry: attempt")]
    assert len(retries) == (1 if case.name == "unreachable host" else 0)


def test_duplicate_step_id(
    database: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A duplicate id in a step module exits 2 naming both locations."""
    (tmp_path / "dup_steps_e2e.py").write_text(
        "from flask_safe_migrate.extension import SafeMigrate\n"
        "import tests.integration.test_cli_end_to_end as m\n"
        "m.SHARED.sql('0001_x', 'CREATE TABLE x (id int)')\n"
        "m.SHARED.sql('0001_x', 'CREATE TABLE y (id int)')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    def create_app() -> Flask:
        app = Flask("dup", instance_path=str(tmp_path / "instance"))
        app.config.update(_url(database, SAFE_MIGRATE_STEP_MODULES=["dup_steps_e2e"]))
        SHARED.init_app(app)
        return app

    result = CliRunner().invoke(FlaskGroup(create_app=create_app), ["safe-migrate"])
    assert result.exit_code == 2, result.output
    assert "duplicate step id '0001_x'" in result.stderr
    assert "dup_steps_e2e.py:3" in result.stderr
    assert PG_PASSWORD not in result.output


SHARED = SafeMigrate()


def test_changed_applied_step(database: TestDatabase, tmp_path: Path) -> None:
    """Editing an applied step exits 6 and names the step."""
    first = invoke(tmp_path, _url(database), [GOOD_STEP], ["run"])
    assert first.exit_code == 0, first.output
    changed = [("0001_t", "CREATE TABLE t (id bigint)")]
    result = invoke(tmp_path, _url(database), changed, ["run"])
    assert result.exit_code == 6, result.output
    assert "0001_t" in result.stderr
    assert "changed" in result.stderr
    assert PG_PASSWORD not in result.output


def test_good_run_then_status(database: TestDatabase, tmp_path: Path) -> None:
    """A good run applies the step; status then shows it applied."""
    assert (
        "1 step(s) applied" in invoke(tmp_path, _url(database), [GOOD_STEP], []).output
    )
    status = invoke(tmp_path, _url(database), [GOOD_STEP], ["status"])
    assert status.exit_code == 0
    assert "0001_t" in status.stdout
    assert "applied" in status.stdout


def test_plan_with_an_edited_applied_step_exits_like_run(
    database: TestDatabase, tmp_path: Path
) -> None:
    """plan refuses an edited applied step with exit 6, as run does (not "up to
    date", exit 0)."""
    assert invoke(tmp_path, _url(database), [GOOD_STEP], ["run"]).exit_code == 0
    changed = [("0001_t", "CREATE TABLE t (id bigint)")]
    result = invoke(tmp_path, _url(database), changed, ["plan"])
    assert result.exit_code == 6, result.output
    assert "0001_t" in result.stderr
    assert "up to date" not in result.stdout


def test_run_on_a_database_migrated_by_another_tool_says_to_baseline(
    database: TestDatabase, tmp_path: Path
) -> None:
    """A step whose table already exists fails naming baseline; after `baseline
    --upto` the next step runs and the first is recorded, not re-run."""
    database.query("CREATE TABLE t (id int)")
    steps = [GOOD_STEP, ("0002_u", "CREATE TABLE u (id int)")]
    result = invoke(tmp_path, _url(database), steps, ["run"])
    assert result.exit_code == 1, result.output
    assert "flask safe-migrate baseline" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    base = invoke(tmp_path, _url(database), steps, ["baseline", "--upto", "0001_t"])
    assert base.exit_code == 0, base.output
    assert invoke(tmp_path, _url(database), steps, ["run"]).exit_code == 0
    rows = database.query(
        "SELECT step_id, attempts FROM safe_migrate_ledger ORDER BY step_id"
    )
    assert rows == [("0001_t", 0), ("0002_u", 1)]


def test_baseline_on_an_empty_database_asks_for_force(
    database: TestDatabase, tmp_path: Path
) -> None:
    """baseline in a database without tables records nothing and asks for --force;
    with --force it records the steps."""
    result = invoke(tmp_path, _url(database), [GOOD_STEP], ["baseline"])
    assert result.exit_code == 1, result.output
    assert "the database has no tables" in result.stderr
    assert "--force" in result.stderr
    assert database.scalar("SELECT to_regclass('safe_migrate_ledger')") is None
    forced = invoke(tmp_path, _url(database), [GOOD_STEP], ["baseline", "--force"])
    assert forced.exit_code == 0, forced.output
    assert database.scalar("SELECT count(*) FROM safe_migrate_ledger") == 1
    assert database.scalar("SELECT to_regclass('t')") is None


def test_status_of_a_baselined_step_does_not_look_run(
    database: TestDatabase, tmp_path: Path
) -> None:
    """After baseline, status shows `baseline` in the attempts column and no
    duration, and its table has a header for every column."""
    database.query("CREATE TABLE t (id int)")
    assert invoke(tmp_path, _url(database), [GOOD_STEP], ["baseline"]).exit_code == 0
    status = invoke(tmp_path, _url(database), [GOOD_STEP], ["status"])
    header, _, row = status.stdout.splitlines()[:3]
    assert header.split() == [
        "step",
        "phase",
        "state",
        "applied",
        "at",
        "duration",
        "attempts",
    ]
    assert row.split()[-2:] == ["-", "baseline"]


def _doctor(tmp_path: Path, url: str) -> Result:
    return invoke(tmp_path, {"SAFE_MIGRATE_DATABASE_URI": url}, [GOOD_STEP], ["doctor"])


def test_doctor_tells_transaction_pooling_from_a_direct_connection(
    database: TestDatabase, tmp_path: Path
) -> None:
    """Through PgBouncer in transaction mode doctor says transaction pooling;
    directly, a direct connection; neither prints FAIL."""
    pooled = _doctor(tmp_path, database.bouncer_url)
    direct = _doctor(tmp_path, database.direct_url)
    for result in (pooled, direct):
        assert result.exit_code == 0, result.output
        assert "FAIL" not in result.stdout
    assert "ok    pooler      transaction pooling" in pooled.stdout
    assert "ok    tls         TLS in use" in pooled.stdout
    assert "ok    pooler      direct connection" in direct.stdout


def test_doctor_on_a_unix_socket_says_tls_does_not_apply(
    database: TestDatabase, tmp_path: Path
) -> None:
    """On a Unix socket TLS does not apply, even with sslmode=require: no FAIL."""
    postgres = database.postgres
    url = (
        f"postgresql+psycopg2://postgres:{PG_PASSWORD}@/{database.name}"
        f"?host={postgres.datadir}&port={postgres.port}&sslmode=prefer"
    )
    result = _doctor(tmp_path, url)
    assert result.exit_code == 0, result.output
    assert "ok    tls         not applicable: Unix socket" in result.stdout
    assert "FAIL" not in result.stdout


def _backfill_group(
    tmp_path: Path, database: TestDatabase, step_id: str, **backfill: str
) -> FlaskGroup:
    """The flask group of an app whose one step is ``migrate.backfill(step_id)``."""

    def create_app() -> Flask:
        app = Flask("backfill", instance_path=str(tmp_path / "instance"))
        app.config.update(_url(database))
        migrate = SafeMigrate()
        migrate.backfill(step_id, **backfill)
        migrate.init_app(app)
        return app

    return FlaskGroup(create_app=create_app)


def test_backfill_of_a_quoted_table_name(
    database: TestDatabase, tmp_path: Path
) -> None:
    """migrate.backfill(table='"user"') updates the table "user", quoted once."""
    database.query(
        'CREATE TABLE "user" (id bigserial PRIMARY KEY, n int); '
        'INSERT INTO "user" (n) SELECT NULL FROM generate_series(1, 5)'
    )
    flask = _backfill_group(
        tmp_path,
        database,
        "0001_user_n",
        table='"user"',
        set="n = 1",
        where="n IS NULL",
    )
    result = CliRunner().invoke(flask, ["safe-migrate"])
    assert result.exit_code == 0, result.output
    assert database.scalar('SELECT count(*) FROM "user" WHERE n = 1') == 5
    assert database.scalar("SELECT state FROM safe_migrate_ledger") == "applied"


def test_a_step_blocked_by_its_own_app_session_names_it(
    database: TestDatabase, tmp_path: Path, engines: list[sa.Engine]
) -> None:
    """A step that reads through db.session, then alters the table, waits for its
    own app session's lock: the error names this process's db.session."""
    database.query("CREATE TABLE notes (id int)")

    def create_app() -> Flask:
        app = Flask("blocked", instance_path=str(tmp_path / "instance"))
        app.config.update(
            SQLALCHEMY_DATABASE_URI=database.direct_url,
            SAFE_MIGRATE_DATABASE_URI=database.direct_url,
            SAFE_MIGRATE_LOCK_TIMEOUT_SECONDS=0.2,
            SAFE_MIGRATE_LOCK_RETRY_MAX_ELAPSED_SECONDS=0.5,
            SAFE_MIGRATE_LINT_ON_RUN=False,
        )
        db = SQLAlchemy()
        db.init_app(app)
        with app.app_context():  # its pool keeps the step's session connection open
            engines.append(db.engine)
        migrate = SafeMigrate()

        @migrate.step("0001_notes_body")
        def add_body(m: t.Any) -> None:
            db.session.execute(sa.text("SELECT count(*) FROM notes"))
            m.execute("ALTER TABLE notes ADD COLUMN body text")

        migrate.init_app(app, db)
        return app

    result = CliRunner().invoke(FlaskGroup(create_app=create_app), ["safe-migrate"])
    assert result.exit_code == 4, result.output
    assert "this process's own app session (db.session" in result.stderr
    assert "AccessShareLock on notes" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert (
        database.scalar(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'notes' AND column_name = 'body'"
        )
        == 0
    )
    assert database.scalar("SELECT count(*) FROM safe_migrate_ledger") == 0


def test_a_resumed_backfill_counts_its_attempts_as_status_does(
    database: TestDatabase, tmp_path: Path
) -> None:
    """A backfill that failed twice and then finished says `3 attempt(s)`, as the
    ledger and status do (not `1 attempt(s)`)."""
    database.query(
        "CREATE TABLE gate (id int); CREATE TABLE notes (id bigserial PRIMARY KEY, "
        "n int); INSERT INTO notes (n) SELECT NULL FROM generate_series(1, 5)"
    )
    flask = _backfill_group(
        tmp_path,
        database,
        "0001_notes_n",
        table="notes",
        set="n = 1 / (SELECT count(*) FROM gate)::int",
        where="n IS NULL",
    )
    for _ in range(2):
        failed = CliRunner().invoke(flask, ["safe-migrate"])
        assert failed.exit_code == 1, failed.output
        assert "DivisionByZero" in failed.stderr
    database.query("INSERT INTO gate VALUES (1)")
    done = CliRunner().invoke(flask, ["safe-migrate"])
    assert done.exit_code == 0, done.output
    assert "applied  0001_notes_n  (backfill, " in done.stdout
    assert ", 3 attempt(s))" in done.stdout
    assert database.scalar("SELECT attempts FROM safe_migrate_ledger") == 3
    assert database.scalar("SELECT count(*) FROM notes WHERE n = 1") == 5
    status = CliRunner().invoke(flask, ["safe-migrate", "status", "--json"])
    assert '"attempts": 3' in status.stdout
