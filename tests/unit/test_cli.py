"""The safe-migrate CLI: options, output, JSON and exit codes (core monkeypatched)."""

from __future__ import annotations

import datetime as dt
import json
import typing as t
from decimal import Decimal
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


def _fail_after_first_step(*args: t.Any, **kw: t.Any) -> t.NoReturn:
    """A run that applies 0001_a (announcing it), then fails on 0002_b."""
    applied = StepOutcome("0001_a", "schema", "applied", 1, 0.25)
    if kw.get("on_outcome"):
        kw["on_outcome"](applied)
    error = exc.StepFailedError("step 0002_b failed", step_id="0002_b", phase="schema")
    error.report = RunReport(phases=("schema",), outcomes=[applied])
    raise error


def test_a_failed_run_still_lists_the_steps_applied_before_it(
    runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step's line is printed as it is applied, so a failure keeps them,
    before the one error line."""
    monkeypatch.setattr(commands, "run", _fail_after_first_step)
    result = runner.invoke(args=["safe-migrate", "run"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "applied  0001_a  (schema, 0.25s, 1 attempt(s))"
    ]
    assert result.stderr.splitlines() == ["Error: step 0002_b failed"]


def test_run_json_prints_its_report_with_the_error_on_failure(
    runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run --json prints the partial report and the error, then exits with its code."""
    monkeypatch.setattr(commands, "run", _fail_after_first_step)
    result = runner.invoke(args=["safe-migrate", "run", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert [o["step_id"] for o in data["outcomes"]] == ["0001_a"]
    assert data["error"] == {
        "type": "StepFailedError",
        "message": "step 0002_b failed",
        "exit_code": 1,
    }


def test_status_progress_column_has_a_header_and_baselined_steps_say_so(
    runner: FlaskCliRunner, migrate: SafeMigrate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status names its progress column; a baselined step shows `baseline`, not
    `0` attempts and a duration, as if it had run."""
    migrate.backfill("0003_c", table="a", set="x = 1")
    steps = migrate.registry

    def fake_status(*args: t.Any, **kw: t.Any) -> commands.StatusReport:
        at = dt.datetime(2025, 1, 10, 12, 0, 0)
        base = LedgerRow("0001_a", "schema", "x", "applied", at, None, 0.0, 0)
        fill = LedgerRow(
            "0003_c",
            "backfill",
            "x",
            "running",
            None,
            at,
            None,
            3,
            progress={"scanned": 1200, "updated": 1000, "batches": 2},
        )
        return commands.StatusReport(
            steps=[
                StepStatus(steps.get("0001_a"), "applied", base),
                StepStatus(steps.get("0003_c"), "running", fill),
            ],
            ledger_exists=True,
        )

    monkeypatch.setattr(commands, "status", fake_status)
    result = runner.invoke(args=["safe-migrate", "status"])
    assert result.exit_code == 0, result.output
    header, _, baselined, backfill = result.stdout.splitlines()[:4]
    assert header.split()[-2:] == ["attempts", "progress"]
    assert baselined.split()[-2:] == ["-", "baseline"]
    assert backfill.index("1,200 rows") == header.index("progress")
    data = json.loads(runner.invoke(args=["safe-migrate", "status", "--json"]).stdout)
    assert [s["baselined"] for s in data["steps"]] == [True, False]


def test_exec_prints_values_as_postgresql_shows_them(
    runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """exec --fetch prints numeric 1.5 as 1.5, jsonb as JSON, timestamptz with its
    zone; a statement without a row count says ok, never -1 rows."""
    at = dt.datetime(2025, 1, 10, 12, 0, tzinfo=dt.UTC)
    row = (Decimal("1.5"), {"a": [1, None]}, at)

    def fake_execute(*args: t.Any, **kw: t.Any) -> commands.ExecReport:
        if args[2].startswith("CREATE"):
            return commands.ExecReport([], [], None, 1, 0.1)
        return commands.ExecReport(["n", "j", "at"], [row], 1, 1, 0.1)

    monkeypatch.setattr(commands, "execute", fake_execute)
    result = runner.invoke(args=["safe-migrate", "exec", "SELECT", "--fetch"])
    assert result.stdout.splitlines()[2].split("  ") == [
        "1.5",
        '{"a": [1, null]}',
        "2025-01-10 12:00:00+00:00",
    ]
    data = json.loads(
        runner.invoke(args=["safe-migrate", "exec", "S", "--json"]).stdout
    )
    assert data["rows"] == [["1.5", {"a": [1, None]}, "2025-01-10T12:00:00+00:00"]]
    ddl = runner.invoke(args=["safe-migrate", "exec", "CREATE TABLE z (id int)"])
    assert ddl.stdout == "ok (1 attempt(s))\n"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT 1; SELECT 2", "exec runs exactly one statement, got 2"),
        ("SET statement_timeout = 0", "exec refuses SET: a session setting leaks"),
        ("BEGIN", "exec refuses BEGIN"),
    ],
)
def test_exec_refuses_two_statements_and_a_session_set(
    runner: FlaskCliRunner, sql: str, message: str
) -> None:
    """exec refuses, before connecting, what would leak into a pooled connection:
    one line, the usage exit code."""
    result = runner.invoke(args=["safe-migrate", "exec", sql])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: {message}")
    assert len(result.stderr.splitlines()) == 1


def test_doctor_warnings_do_not_fail(
    runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warning prints WARN and exits 0; only a real failure prints FAIL."""
    report = commands.DoctorReport(
        "postgresql://u:***@h/db",
        [
            commands.DoctorCheck("connect", True, "connected"),
            commands.DoctorCheck("tls", True, "no TLS to h", warning=True),
        ],
    )
    monkeypatch.setattr(commands, "doctor", lambda *a, **k: report)
    result = runner.invoke(args=["safe-migrate", "doctor"])
    assert result.exit_code == 0
    assert "WARN  tls" in result.stdout
    assert "FAIL" not in result.stdout


def test_registration_error_is_one_line_exit_2_from_the_command(
    tmp_path: Path,
) -> None:
    """A duplicate step id registered before init_app is reported by the command
    as one line, exit 2, and does not stop other flask commands."""

    def create_app() -> Flask:
        app = Flask("dup", instance_path=str(tmp_path))
        app.config.update(SQLALCHEMY_DATABASE_URI="postgresql://u:p@h/db")
        migrate = SafeMigrate()
        migrate.sql("0001_a", "CREATE TABLE a (id int)")
        migrate.sql("0001_a", "CREATE TABLE b (id int)")
        migrate.init_app(app)
        return app

    flask = FlaskGroup(create_app=create_app)
    result = CliRunner().invoke(flask, ["safe-migrate", "status"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: duplicate step id '0001_a'")
    assert len(result.stderr.splitlines()) == 1
    routes = CliRunner().invoke(flask, ["routes"])
    assert routes.exit_code == 0, routes.output
    assert "static" in routes.stdout


def test_a_step_module_that_fails_to_register_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step module raising a registration error while init_app imports it is
    reported by the command (one line, exit 2), not as a traceback."""
    (tmp_path / "empty_sql_steps.py").write_text(
        "import tests.unit.test_cli as m\nm.EMPTY.sql('0001_x', '  ')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    def create_app() -> Flask:
        app = Flask("empty", instance_path=str(tmp_path / "instance"))
        app.config.update(
            SQLALCHEMY_DATABASE_URI="postgresql://u:p@h/db",
            SAFE_MIGRATE_STEP_MODULES=["empty_sql_steps"],
        )
        EMPTY.init_app(app)
        return app

    result = CliRunner().invoke(FlaskGroup(create_app=create_app), ["safe-migrate"])
    assert result.exit_code == 2, result.output
    assert "SQL must be a non-empty string" in result.stderr
    assert len(result.stderr.splitlines()) == 1


EMPTY = SafeMigrate()
