"""Bad input through the real ``flask safe-migrate`` command: exit code and one line."""

from __future__ import annotations

import dataclasses
import typing as t
from pathlib import Path

import pytest
from click.testing import CliRunner
from click.testing import Result
from flask import Flask
from flask.cli import FlaskGroup

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
