"""The safe-migrate CLI: options, output, JSON and exit codes (core monkeypatched)."""

from __future__ import annotations

import datetime as dt
import json
import typing as t
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.cli import FlaskGroup
from flask.testing import FlaskCliRunner

from flask_safe_migrate import Phase
from flask_safe_migrate import SafeMigrate
from flask_safe_migrate import cli
from flask_safe_migrate.core import commands
from flask_safe_migrate.core import exceptions as exc
from flask_safe_migrate.core.ledger import LedgerRow
from flask_safe_migrate.core.lint import REPORT_SCHEMA
from flask_safe_migrate.core.phases import StepOutcome
from flask_safe_migrate.core.retry import RetryState
from flask_safe_migrate.core.runner import RunReport
from flask_safe_migrate.core.runner import StepStatus

from .lint.test_json_schema import validate

Calls = list[tuple[str, dict[str, t.Any]]]


@pytest.fixture
def migrate(app: Flask) -> SafeMigrate:
    """Give an initialized extension with two SQL steps."""
    migrate = SafeMigrate()
    migrate.sql("0001_a", "CREATE TABLE a (id int)")
    migrate.sql("0002_b", "CREATE TABLE b (id int)")
    migrate.init_app(app)
    return migrate


@pytest.fixture
def runner(app: Flask, migrate: SafeMigrate) -> FlaskCliRunner:
    """Give the app's CLI runner."""
    return app.test_cli_runner()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, migrate: SafeMigrate) -> Calls:
    """Replace the core commands with fakes that record their options."""
    recorded: Calls = []
    step_a = migrate.registry.get("0001_a")

    def fake_run(*args: t.Any, **kw: t.Any) -> RunReport:
        recorded.append(("run", kw))
        report = RunReport(phases=tuple(str(p) for p in kw["phases"]))
        report.pending = [step_a]
        report.outcomes = [StepOutcome("0001_a", "schema", "applied", 1, 0.25)]
        if kw.get("on_outcome"):
            kw["on_outcome"](report.outcomes[0])
        return report

    def fake_status(*args: t.Any, **kw: t.Any) -> commands.StatusReport:
        recorded.append(("status", kw))
        row = LedgerRow(
            "0001_a",
            "schema",
            step_a.checksum,
            "applied",
            applied_at=dt.datetime(2025, 1, 10, 12, 0, 0),
            duration_seconds=0.5,
            attempts=2,
        )
        step_b = migrate.registry.get("0002_b")
        return commands.StatusReport(
            steps=[StepStatus(step_a, "applied", row), StepStatus(step_b, "pending")],
            ledger_exists=True,
        )

    def fake_execute(*args: t.Any, **kw: t.Any) -> commands.ExecReport:
        recorded.append(("execute", {"sql": args[2], **kw}))
        return commands.ExecReport(["id", "name"], [(1, "Ada"), (22, None)], 2, 1, 0.1)

    monkeypatch.setattr(commands, "run", fake_run)
    monkeypatch.setattr(commands, "status", fake_status)
    monkeypatch.setattr(commands, "execute", fake_execute)
    return recorded


def test_bare_group_runs_all_phases(runner: FlaskCliRunner, calls: Calls) -> None:
    """`flask safe-migrate` alone runs every phase and reports the applied steps."""
    result = runner.invoke(args=["safe-migrate"])
    assert result.exit_code == 0, result.output
    assert calls[0][1]["phases"] == list(Phase)
    assert "applied  0001_a" in result.stdout
    assert "1 step(s) applied" in result.stdout


def test_run_passes_its_options(runner: FlaskCliRunner, calls: Calls) -> None:
    """run forwards --phase, --step, --dry-run and --max-seconds to the core."""
    args = ["run", "--phase", "schema", "--step", "0001_a", "--step", "0002_b"]
    result = runner.invoke(
        args=["safe-migrate", *args, "--dry-run", "--max-seconds", "5"]
    )
    assert result.exit_code == 0, result.output
    options = calls[0][1]
    assert options["phases"] == ["schema"]
    assert options["step_ids"] == ["0001_a", "0002_b"]
    assert options["dry_run"] is True
    assert options["max_seconds"] == 5.0
    assert options["before_sleep"] is cli.echo_retry


def test_phase_typo_is_a_usage_error(runner: FlaskCliRunner, calls: Calls) -> None:
    """An unknown --phase exits 2 before anything runs."""
    result = runner.invoke(args=["safe-migrate", "run", "--phase", "shema"])
    assert result.exit_code == 2
    assert "shema" in result.output
    assert calls == []


def test_run_json_shape(runner: FlaskCliRunner, calls: Calls) -> None:
    """run --json prints the documented keys."""
    result = runner.invoke(args=["safe-migrate", "run", "--json"])
    data = json.loads(result.stdout)
    assert set(data) == {
        "phases",
        "dry_run",
        "up_to_date",
        "outcomes",
        "pending",
        "waiting",
        "changed",
        "stopped_by_budget",
        "elapsed_seconds",
    }
    assert data["outcomes"][0]["step_id"] == "0001_a"


def test_status_table(runner: FlaskCliRunner, calls: Calls) -> None:
    """status prints an aligned table with the documented columns."""
    result = runner.invoke(args=["safe-migrate", "status"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "step",
        "phase",
        "state",
        "applied",
        "at",
        "duration",
        "attempts",
    ]
    assert lines[2].split() == [
        "0001_a",
        "schema",
        "applied",
        "2025-01-10",
        "12:00:00",
        "0.50s",
        "2",
    ]
    assert lines[2].index("applied") == lines[0].index("state")
    assert "1 applied, 1 pending" in result.stdout


def test_status_json_shape(runner: FlaskCliRunner, calls: Calls) -> None:
    """status --json lists each step with its state and ledger fields."""
    result = runner.invoke(args=["safe-migrate", "status", "--json"])
    data = json.loads(result.stdout)
    assert data["counts"] == {"applied": 1, "pending": 1}
    assert data["steps"][0]["applied_at"] == "2025-01-10T12:00:00"
    assert data["steps"][1]["state"] == "pending"


def test_exec_fetch_prints_a_table(runner: FlaskCliRunner, calls: Calls) -> None:
    """exec --fetch prints the rows aligned under their column names."""
    result = runner.invoke(args=["safe-migrate", "exec", "SELECT 1", "--fetch"])
    assert result.exit_code == 0, result.output
    assert calls[0][1]["sql"] == "SELECT 1"
    assert result.stdout.splitlines()[:4] == [
        "id  name",
        "--  ----",
        "1   Ada",
        "22  -",
    ]


def test_exec_json(runner: FlaskCliRunner, calls: Calls) -> None:
    """exec --json prints columns and rows."""
    result = runner.invoke(args=["safe-migrate", "exec", "SELECT 1", "--json"])
    data = json.loads(result.stdout)
    assert data["rows"] == [[1, "Ada"], [22, None]]
    assert data["columns"] == ["id", "name"]


def test_plan_prints_sql(
    runner: FlaskCliRunner, migrate: SafeMigrate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan prints each pending step's SQL under a comment naming the step."""

    def fake_plan(*args: t.Any, **kw: t.Any) -> commands.PlanReport:
        step = migrate.registry.get("0002_b")
        planned = commands.PlannedStep(step, ("CREATE TABLE b (id int)",))
        return commands.PlanReport(steps=[planned], ledger_exists=True)

    monkeypatch.setattr(commands, "plan", fake_plan)
    result = runner.invoke(args=["safe-migrate", "plan"])
    assert result.stdout.startswith("-- 0002_b (schema, ")
    assert "CREATE TABLE b (id int);" in result.stdout


def test_baseline_reports_recorded_steps(
    runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """baseline --upto passes the id and lists the recorded steps."""
    seen: dict[str, t.Any] = {}

    def fake_baseline(*args: t.Any, **kw: t.Any) -> commands.BaselineReport:
        seen.update(kw)
        return commands.BaselineReport(recorded=["0001_a"], already_applied=[])

    monkeypatch.setattr(commands, "baseline", fake_baseline)
    result = runner.invoke(args=["safe-migrate", "baseline", "--upto", "0001_a"])
    assert seen == {"upto": "0001_a", "force": False}
    assert "recorded 0001_a" in result.stdout


def test_doctor_unreachable_exits_5(
    runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """doctor exits 5 when it cannot connect, 0 when every check passes."""
    failed = commands.DoctorReport(
        "postgresql://u:***@h/db", [commands.DoctorCheck("connect", False, "refused")]
    )
    monkeypatch.setattr(commands, "doctor", lambda *a, **k: failed)
    result = runner.invoke(args=["safe-migrate", "doctor"])
    assert result.exit_code == 5
    assert "FAIL  connect" in result.stdout


def test_check_counts_clean_steps(runner: FlaskCliRunner) -> None:
    """check lints every step, verifies their module, and reports no problems."""
    result = runner.invoke(args=["safe-migrate", "check"])
    assert result.exit_code == 0, result.output
    assert "2 steps checked, 1 file(s) verified: no problems" in result.stdout


def test_check_refusal_exits_3(runner: FlaskCliRunner, migrate: SafeMigrate) -> None:
    """check exits 3 and names the step when a step has an error finding."""
    migrate.sql("0003_bad", "CREATE TABLE (")
    migrate.sql("0004_dml", "DELETE FROM a")
    result = runner.invoke(args=["safe-migrate", "check", "--no-squawk"])
    assert result.exit_code == 3
    assert "0003_bad  (schema)\n  error    sql-syntax-error" in result.stdout
    assert "0004_dml  (schema)\n  error    dml-needs-category" in result.stdout
    assert "4 steps checked, 1 file(s) verified: 2 error(s), 0 warning(s)" in (
        result.stdout
    )


def test_check_warnings_exit_0(runner: FlaskCliRunner, migrate: SafeMigrate) -> None:
    """Warnings alone do not fail check."""
    migrate.sql("0003_tier", "ALTER TABLE a ADD COLUMN tier text", category="seed")
    result = runner.invoke(args=["safe-migrate", "check", "--no-squawk"])
    assert result.exit_code == 0, result.output
    assert "warning  unneeded-category" in result.stdout


def test_check_json_and_paths(
    runner: FlaskCliRunner, migrate: SafeMigrate, tmp_path: Path
) -> None:
    """check --json PATH verifies the extra path and prints the documented shape."""
    extra = tmp_path / "boot.py"
    extra.write_text(
        "def boot(engine):\n"
        "    with engine.begin():\n"
        "        execute_with_retry(engine, 'ALTER TABLE a ADD COLUMN b text')\n"
    )
    result = runner.invoke(args=["safe-migrate", "check", "--json", str(extra)])
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert validate(data, REPORT_SCHEMA) == []
    assert data["ok"] is False
    assert data["steps_checked"] == 2
    (finding,) = data["findings"]
    assert finding["rule"] == "transaction-around-retry"
    assert finding["location"].endswith("boot.py:2")
    assert finding["source"] == "verifier"


ERRORS = [
    (exc.StepFailedError("step failed", step_id="s", phase="schema"), 1),
    (exc.StepRefusedError("step refused", step_id="s", phase="schema"), 1),
    (exc.StatementFailedError("statement failed", sql="x"), 1),
    (exc.ConfigurationError("bad value", key="SAFE_MIGRATE_X"), 2),
    (exc.DuplicateStepError("duplicate", step_id="s"), 2),
    (exc.LintViolationError("lint", findings=[]), 3),
    (exc.LockNotAcquiredError("lock busy", key="advisory:1", waited_seconds=1.0), 4),
    (exc.DatabaseUnavailableError("cannot reach", url="postgresql://h"), 5),
    (exc.ChecksumMismatchError("changed", step_ids=["s"]), 6),
    (RuntimeError("surprise"), 1),
]


@pytest.mark.parametrize(("error", "code"), ERRORS)
def test_errors_map_to_exit_codes(
    runner: FlaskCliRunner,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    code: int,
) -> None:
    """Each error becomes its exit code and one `Error:` line, no traceback."""

    def fail(*args: t.Any, **kw: t.Any) -> t.NoReturn:
        raise error

    monkeypatch.setattr(commands, "run", fail)
    result = runner.invoke(args=["safe-migrate", "run"])
    assert result.exit_code == code
    expected = str(error) if code != 1 or str(error) != "surprise" else ""
    assert result.stderr.splitlines() == [
        f"Error: {expected or 'RuntimeError: surprise'}"
    ]
    assert "Traceback" not in result.output


def test_retries_are_echoed_as_they_happen(
    runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The before_sleep hook prints one retry line per failed attempt to stderr."""

    def flaky_run(*args: t.Any, **kw: t.Any) -> RunReport:
        error = OSError("SSL SYSCALL error: EOF detected")
        kw["before_sleep"](RetryState(2, 0.5, error, next_sleep_seconds=0.41))
        return RunReport(phases=("schema",))

    monkeypatch.setattr(commands, "run", flaky_run)
    result = runner.invoke(args=["safe-migrate", "run"])
    assert result.stderr == (
        "retry: attempt 2 failed (OSError: SSL SYSCALL error: EOF detected); "
        "retrying in 0.41s\n"
    )
    assert "up to date" in result.stdout


def test_config_error_when_loaded_by_flask_command(tmp_path: t.Any) -> None:
    """Loaded by `flask safe-migrate`, a bad setting is one error line and exit 2."""

    def create_app() -> Flask:
        app = Flask("bad", instance_path=str(tmp_path))
        app.config.update(
            SQLALCHEMY_DATABASE_URI="postgresql://u:p@h/db",
            SAFE_MIGRATE_ON_BOOT="sometimes",
        )
        SafeMigrate(app)
        return app

    result = CliRunner().invoke(
        FlaskGroup(create_app=create_app), ["safe-migrate", "status"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: SAFE_MIGRATE_ON_BOOT: must be one of")
    assert len(result.stderr.splitlines()) == 1


def test_boot_run_is_skipped_when_loaded_for_the_command(
    tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaded by `flask safe-migrate`, init_app leaves the run to the command."""
    ran: list[str] = []

    def fake_run(*args: t.Any, **kw: t.Any) -> RunReport:
        ran.append("run")
        return RunReport(phases=("schema",))

    monkeypatch.setattr(commands, "run", fake_run)

    def create_app() -> Flask:
        app = Flask("boot", instance_path=str(tmp_path))
        app.config.update(SQLALCHEMY_DATABASE_URI="postgresql://u:p@h/db")
        SafeMigrate(app)
        return app

    result = CliRunner().invoke(FlaskGroup(create_app=create_app), ["safe-migrate"])
    assert result.exit_code == 0, result.output
    assert ran == ["run"]
