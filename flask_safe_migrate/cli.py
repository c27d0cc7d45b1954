"""The ``flask safe-migrate`` command group: thin click wrappers over core.commands."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import sys
import time
import typing as t

import click
import sqlalchemy as sa
from flask.cli import AppGroup

from .core import commands
from .core.disconnects import describe_error
from .core.exceptions import ChecksumMismatchError
from .core.exceptions import ConfigurationError
from .core.exceptions import DatabaseUnavailableError
from .core.exceptions import LintViolationError
from .core.exceptions import LockNotAcquiredError
from .core.exceptions import RegistrationError
from .core.exceptions import SafeMigrateError
from .core.exceptions import StatementRefusedError
from .core.generate import GenerateReport
from .core.lint import Finding
from .core.lint import LintReport
from .core.lint import render_github
from .core.lint import render_sarif
from .core.lint import report_to_dict
from .core.phases import StepOutcome
from .core.phases.backfill import BackfillProgress
from .core.phases.backfill import progress_fields
from .core.retry import RetryState
from .core.runner import RunReport
from .core.runner import StepStatus
from .core.steps import Phase
from .state import MigrateState
from .state import blame_app_session
from .state import get_state
from .state import migration_engine
from .state import registrar_path

__all__ = ["EXIT_CODES", "exit_code_for", "group"]

logger = logging.getLogger(__name__)

P = t.ParamSpec("P")

#: Exit codes, most specific first; anything else that fails exits 1.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ChecksumMismatchError, 6),
    (DatabaseUnavailableError, 5),
    (LockNotAcquiredError, 4),
    (LintViolationError, 3),
    (ConfigurationError, 2),
    (RegistrationError, 2),
    (StatementRefusedError, 2),
    (SafeMigrateError, 1),
)
EXIT_CHECK = 3
EXIT_UNAVAILABLE = 5


def exit_code_for(exc: BaseException) -> int:
    """Return the process exit code for ``exc`` (the table in the README)."""
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return 1


def _fail(message: str, code: int) -> t.NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(code)


def _reports_errors(fn: t.Callable[P, None]) -> t.Callable[P, None]:
    """Turn any error into one ``Error: ...`` line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except SafeMigrateError as exc:
            _fail(str(exc), exit_code_for(exc))
        except Exception as exc:
            # Broad on purpose: the CLI never shows a traceback (it may hold a URL).
            logger.debug("unexpected error", exc_info=True)
            _fail(describe_error(exc), 1)

    return wrapper


def _state() -> MigrateState:
    state = get_state()
    state.raise_error()
    return state


def echo_retry(state: RetryState) -> None:
    """Print one line per retry to stderr, as it happens."""
    click.echo(
        f"retry: attempt {state.attempt} failed ({describe_error(state.exception)}); "
        f"retrying in {state.next_sleep_seconds:.2f}s",
        err=True,
    )


def _echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default))


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def render_table(
    headers: t.Sequence[str],
    rows: t.Sequence[t.Sequence[object]],
    cell: t.Callable[[object], str] | None = None,
) -> str:
    """Return ``rows`` as an aligned text table under ``headers``.

    :param cell: renders one value (default: durations as ``0.50s``, times to the
        second, None as ``-``).
    """
    cells = [[(cell or _cell)(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = [list(headers), ["-" * w for w in widths], *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.2f}s"
    return str(value)


# -- renderers ----------------------------------------------------------------------


def outcome_line(outcome: StepOutcome) -> str:
    """``applied  0001_a  (schema, 0.25s, 1 attempt(s))``: one step of a run."""
    detail = f"  {outcome.detail}" if outcome.detail else ""
    return (
        f"{outcome.status:<8} {outcome.step_id}  ({outcome.phase}, "
        f"{outcome.duration_seconds:.2f}s, {outcome.attempts} attempt(s)){detail}"
    )


def echo_outcome(outcome: StepOutcome) -> None:
    """Print a step's line as soon as it is applied (or skipped)."""
    click.echo(outcome_line(outcome))


def render_run(report: RunReport) -> str:
    """The end of ``run``'s output (each step's line was printed as it ran)."""
    lines = [f"changed  {s.step.id}  (warned, not re-run)" for s in report.changed]
    if report.dry_run:
        lines += [outcome_line(o) for o in report.outcomes]
        lines.append(f"dry run: {len(report.pending)} step(s) would be applied")
    elif report.up_to_date:
        lines.append("up to date: no pending steps")
    else:
        lines.append(
            f"{len(report.applied)} step(s) applied in {report.elapsed_seconds:.2f}s"
        )
        if report.stopped_by_budget:
            done = sum(o.status in ("applied", "skipped") for o in report.outcomes)
            left = len(report.pending) - done
            lines.append(
                f"stopped by --max-seconds: {left} step(s) still pending; run again "
                "to resume (a backfill continues from its checkpoint)"
            )
    return "\n".join(lines)


def render_status(report: commands.StatusReport) -> str:
    """Human output of ``status``: a table of steps and a count per state."""
    rows = [
        [
            s.step.id,
            s.step.phase.value,
            s.state,
            s.row.applied_at if s.row else None,
            None
            if commands.is_baselined(s.row) or not s.row
            else s.row.duration_seconds,
            _attempts(s),
            _describe_progress(s),
        ]
        for s in report.steps
    ]
    headers = ["step", "phase", "state", "applied at", "duration", "attempts"]
    if any(row[-1] for row in rows):
        headers.append("progress")
    else:
        rows = [row[:-1] for row in rows]
    lines = [render_table(headers, rows)] if rows else ["no steps registered"]
    if not report.ledger_exists:
        lines.append("the ledger table does not exist yet (nothing applied)")
    lines += [
        f"unknown ledger row: {r.step_id} ({r.state}): no registered step has this id"
        for r in report.unknown_rows
    ]
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(report.counts.items())))
    return "\n".join(line for line in lines if line)


def _attempts(status: StepStatus) -> object:
    """The attempts cell: ``baseline`` for a step recorded without being run."""
    if commands.is_baselined(status.row):
        return "baseline"
    return status.row.attempts if status.row else None


def _describe_progress(status: StepStatus) -> str:
    """``1,234 rows, 1,200 updated, 5 batches`` for a backfill; the lease holder of
    an index build in progress."""
    row = status.row
    if row is None:
        return ""
    if status.state == "running" and row.lease_owner:
        return f"building by {row.lease_owner}"
    fields = progress_fields(row.progress)
    if not fields or status.step.phase is not Phase.BACKFILL:
        return ""
    text = f"{int(fields.get('scanned') or 0):,} rows, "
    text += f"{int(fields.get('updated') or 0):,} updated, "
    return text + f"{int(fields.get('batches') or 0):,} batches"


class ProgressPrinter:
    """Backfill progress on stderr: a bar redrawn in place on a terminal, else a
    line every few seconds."""

    def __init__(self, *, tty: bool | None = None, every_seconds: float = 5.0):
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.every_seconds = every_seconds
        self._last: dict[str, float] = {}
        self._done: set[str] = set()

    def __call__(self, progress: BackfillProgress) -> None:
        if progress.done:
            if progress.step_id in self._done:
                return
            self._done.add(progress.step_id)
        if self.tty:
            click.echo(
                "\r\033[K" + self.bar(progress),
                err=True,
                nl=progress.done,
                color=True,
            )
            return
        now = time.monotonic()
        last = self._last.get(progress.step_id)
        if progress.done or last is None or now - last >= self.every_seconds:
            self._last[progress.step_id] = now
            click.echo(f"{progress.step_id}: {progress.describe()}", err=True)

    @staticmethod
    def bar(progress: BackfillProgress, width: int = 24) -> str:
        """``step [#######.........] 30% 1,234 rows 5,000 rows/s ETA 12s``."""
        fraction = progress.fraction
        filled = round(width * (fraction or 0.0))
        bar = "#" * filled + "." * (width - filled)
        return f"{progress.step_id} [{bar}] {progress.describe()}"


def render_plan(report: commands.PlanReport) -> str:
    """Human output of ``plan``: the SQL of each pending step, as a script."""
    if not report.steps:
        return "-- up to date: no pending steps"
    parts = []
    for p in report.steps:
        body = "\n".join(s.rstrip().rstrip(";") + ";" for s in p.statements)
        parts.append(
            f"-- {p.step.id} ({p.step.phase.value}, {p.step.location})\n{body}"
        )
    return "\n\n".join(parts)


def render_exec(report: commands.ExecReport, *, fetch: bool) -> str:
    """Human output of ``exec``: the rows as a table, or the row count."""
    if fetch and report.columns:
        table = render_table(report.columns, report.rows, cell=commands.format_value)
        return f"{table}\n({len(report.rows)} row(s))"
    count = "" if report.rowcount is None else f": {report.rowcount} row(s)"
    return f"ok{count} ({report.attempts} attempt(s))"


def render_baseline(report: commands.BaselineReport) -> str:
    """Human output of ``baseline``: each recorded step, then the counts."""
    lines = [f"recorded {step_id}" for step_id in report.recorded]
    lines.append(
        f"{len(report.recorded)} step(s) recorded as applied, "
        f"{len(report.already_applied)} already in the ledger"
    )
    return "\n".join(lines)


def render_doctor(report: commands.DoctorReport) -> str:
    """Human output of ``doctor``: one line per check."""
    lines = [f"database: {report.url}"]
    lines += [f"{c.label:<4}  {c.name:<10}  {c.detail}" for c in report.checks]
    return "\n".join(lines)


def check_steps(
    state: MigrateState, paths: t.Sequence[str] = (), squawk: bool = True
) -> LintReport:
    """Lint every step and verify the migration code of ``state``'s app."""
    return commands.check(state.settings, state.registry, paths=paths, squawk=squawk)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def render_check(report: LintReport) -> str:
    """Human output of ``check``: the findings grouped by step, then by file."""
    groups: dict[str, list[Finding]] = {}
    for finding in report.findings:
        if finding.step_id is not None:
            key = f"{finding.step_id}  ({finding.phase})"
        else:
            key = (finding.location or "?").rsplit(":", 1)[0]
        groups.setdefault(key, []).append(finding)
    lines: list[str] = []
    for key, findings in groups.items():
        lines.append(key)
        for f in findings:
            where = f.location or ""
            if f.line is not None:
                where += f", line {f.line} of its SQL"
            lines.append(f"  {f.severity.value:<8} {f.rule}  {where}")
            if f.statement:
                lines.append(f"           {_clip(f.statement, 100)}")
            lines.append(f"           {f.message}")
            lines.append(f"           fix: {f.hint}")
        lines.append("")
    if report.squawk_note:
        lines.append(f"squawk: {report.squawk_note}")
    summary = (
        f"{report.steps_checked} steps checked, "
        f"{len(report.files_checked)} file(s) verified: "
    )
    if report.findings:
        summary += f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)"
    else:
        summary += "no problems"
    if report.suppressed:
        summary += f" ({len(report.suppressed)} suppressed)"
    lines.append(summary)
    return "\n".join(lines)


def _display(path: str | None) -> str:
    """``path`` relative to the working directory when it is below it."""
    if path is None:
        return "?"
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def render_generate(report: GenerateReport, *, dry_run: bool, check: bool) -> str:
    """Human output of ``generate``: no changes, the differences, or the module."""
    if not report.has_changes:
        return "No changes: the models and the database agree."
    if check:
        changes = sorted({s.change for s in report.steps})
        return f"The models and the database differ: {', '.join(changes)}."
    lines = [report.source or ""] if dry_run else []
    verb = "Would write" if dry_run else "Wrote"
    lines.append(f"{verb} {_display(report.path)}: {len(report.steps)} step(s).")
    if report.commented:
        lines.append(
            f"{len(report.commented)} step(s) written commented out (destructive or "
            "not handled): review them."
        )
    for name in report.todo_values:
        lines.append(f"Set {name} in the module before deploying (it refuses to load).")
    if report.unlisted_module:
        lines.append(
            f"Add {report.unlisted_module!r} to SAFE_MIGRATE_STEP_MODULES "
            "(or make the step modules a package)."
        )
    for finding in report.findings:
        lines.append(f"warning: check reports {finding.rule}: {finding.message}")
    return "\n".join(lines)


# -- commands -----------------------------------------------------------------------

_PHASES = click.Choice([p.value for p in Phase])
_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON report (also on failure)."
)


class Report(t.Protocol):
    """What every command returns: a report that knows its JSON shape."""

    def to_dict(self) -> dict[str, t.Any]:
        """The JSON shape of the report."""
        ...


R = t.TypeVar("R", bound=Report)


def _show(report: R, as_json: bool, render: t.Callable[[R], str]) -> None:
    """Print ``report`` as JSON or as ``render`` makes it."""
    if as_json:
        _echo_json(report.to_dict())
    else:
        click.echo(render(report))


def error_to_dict(exc: SafeMigrateError) -> dict[str, t.Any]:
    """The JSON of a failed command: its partial report (if any) and the error."""
    data = exc.report.to_dict() if exc.report is not None else {}
    data["error"] = {
        "type": type(exc).__name__,
        "message": str(exc),
        "exit_code": exit_code_for(exc),
    }
    return data


@contextlib.contextmanager
def _command(as_json: bool) -> t.Iterator[tuple[MigrateState, sa.Engine]]:
    """The app's state and a migration engine (disposed at the end); with
    ``--json`` a failure still prints its report, with the error."""
    try:
        state = _state()
        with migration_engine() as engine:
            try:
                yield state, engine
            except LockNotAcquiredError as exc:
                raise blame_app_session(state, engine, exc) from exc.__cause__
    except SafeMigrateError as exc:
        if as_json:
            _echo_json(error_to_dict(exc))
        raise


@click.group(cls=AppGroup, name="safe-migrate", invoke_without_command=True)
@click.pass_context
def group(ctx: click.Context) -> None:
    """Apply and inspect flask-safe-migrate steps (bare: run all phases)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(run_command)


@group.command("run")
@click.option("--phase", type=_PHASES, help="Only this phase (default: all).")
@click.option("--step", "step_ids", multiple=True, help="Only this step id (repeat).")
@click.option("--dry-run", is_flag=True, help="Show what would run; send no DDL.")
@click.option("--max-seconds", type=click.FloatRange(min=0), help="Time budget.")
@_json_option
@_reports_errors
def run_command(
    phase: str | None = None,
    step_ids: tuple[str, ...] = (),
    dry_run: bool = False,
    max_seconds: float | None = None,
    as_json: bool = False,
) -> None:
    """Apply the pending steps, each exactly once; print each as it is applied."""
    with _command(as_json) as (state, engine):
        report = commands.run(
            state.settings,
            state.registry,
            engine,
            phases=[phase] if phase else list(Phase),
            step_ids=list(step_ids) or None,
            dry_run=dry_run,
            max_seconds=max_seconds,
            before_sleep=echo_retry,
            on_progress=ProgressPrinter(),
            on_outcome=None if as_json else echo_outcome,
        )
    _show(report, as_json, render_run)


@group.command("status")
@_json_option
@_reports_errors
def status_command(as_json: bool) -> None:
    """Show every step: phase, state, when applied, how long, attempts, progress."""
    with _command(as_json) as (state, engine):
        report = commands.status(
            state.settings, state.registry, engine, before_sleep=echo_retry
        )
    _show(report, as_json, render_status)


@group.command("plan")
@_json_option
@_reports_errors
def plan_command(as_json: bool) -> None:
    """Print the SQL that run would send, without sending it."""
    with _command(as_json) as (state, engine):
        report = commands.plan(state.settings, state.registry, engine)
    _show(report, as_json, render_plan)


@group.command("exec")
@click.argument("sql")
@click.option("--fetch", is_flag=True, help="Print the rows the statement returns.")
@_json_option
@_reports_errors
def exec_command(sql: str, fetch: bool, as_json: bool) -> None:
    """Run one SQL statement in its own transaction, retried through disconnects."""
    with _command(as_json) as (state, engine):
        report = commands.execute(
            state.settings, engine, sql, fetch=fetch or as_json, before_sleep=echo_retry
        )
    _show(report, as_json, functools.partial(render_exec, fetch=fetch))


@group.command("baseline")
@click.option("--upto", help="Last step id to record (default: all).")
@click.option(
    "--from-alembic",
    is_flag=True,
    help="Record the Alembic revisions up to alembic_version (Flask-Migrate).",
)
@click.option("--force", is_flag=True, help="Record even in a database without tables.")
@_json_option
@_reports_errors
def baseline_command(
    upto: str | None, from_alembic: bool, force: bool, as_json: bool
) -> None:
    """Record steps as applied without running them, to adopt an existing database."""
    if from_alembic and upto:
        raise click.UsageError("--from-alembic reads alembic_version; drop --upto")
    with _command(as_json) as (state, engine):
        if from_alembic:
            report = commands.baseline_from_alembic(
                state.settings, state.registry, engine
            )
        else:
            report = commands.baseline(
                state.settings, state.registry, engine, upto=upto, force=force
            )
    _show(report, as_json, render_baseline)


@group.command("doctor")
@_json_option
@_reports_errors
def doctor_command(as_json: bool) -> None:
    """Check reachability, TLS, server version, round-trip time and pooler mode."""
    with _command(as_json) as (state, engine):
        report = commands.doctor(state.settings, engine)
    _show(report, as_json, render_doctor)
    if not report.ok:
        raise click.exceptions.Exit(1 if report.connected else EXIT_UNAVAILABLE)


#: ``check --format`` renderers of the formats CI systems read.
_CHECK_RENDERERS = {"sarif": render_sarif, "github": render_github}


@group.command("check")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "sarif", "github"]),
    default="text",
    help="text, json, sarif (code scanning) or github (workflow annotations).",
)
@click.option("--no-squawk", is_flag=True, help="Run our rules only, not squawk's.")
@_reports_errors
def check_command(
    paths: tuple[str, ...], as_json: bool, output_format: str, no_squawk: bool
) -> None:
    """Lint every step and verify the migration code (and PATHS); no database.

    Exits 3 when there is an error finding; warnings alone exit 0.
    """
    report = check_steps(_state(), paths, squawk=not no_squawk)
    if as_json or output_format == "json":
        _echo_json(report_to_dict(report))
    elif output_format in _CHECK_RENDERERS:
        click.echo(_CHECK_RENDERERS[output_format](report))
    else:
        click.echo(render_check(report))
    if not report.ok:
        raise click.exceptions.Exit(EXIT_CHECK)


@group.command("generate")
@click.argument("message")
@click.option("--output", type=click.Path(dir_okay=False), help="The file to write.")
@click.option("--dry-run", is_flag=True, help="Print the module; write nothing.")
@click.option("--check", "check_only", is_flag=True, help="Exit 1 if models differ.")
@click.option("--allow-destructive", is_flag=True, help="Write drops active.")
@_json_option
@_reports_errors
def generate_command(
    message: str,
    output: str | None,
    dry_run: bool,
    check_only: bool,
    allow_destructive: bool,
    as_json: bool,
) -> None:
    """Write new steps from the models (Alembic's comparison), in safe form."""
    with _command(as_json) as (state, engine):
        report = commands.generate(
            state.settings, state.registry, engine, message=message,
            registrar=registrar_path(), metadata=state.models(), output=output,
            dry_run=dry_run, check=check_only, allow_destructive=allow_destructive,
        )  # fmt: skip
    render = functools.partial(render_generate, dry_run=dry_run, check=check_only)
    _show(report, as_json, render)
    if check_only and report.has_changes:
        raise click.exceptions.Exit(1)
