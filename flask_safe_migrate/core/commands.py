"""The commands (run, status, plan, execute, baseline, doctor): the core entry points.

Each takes explicit ``(settings, registry, engine)`` plus options, returns a report
dataclass and prints nothing. Database errors are translated here, at one boundary,
into :mod:`.exceptions` with one readable line and the password hidden.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import time
import typing as t
from dataclasses import dataclass
from dataclasses import field

import sqlalchemy as sa

from . import revisions
from .disconnects import ErrorKind
from .disconnects import classify_error
from .disconnects import describe_error
from .disconnects import error_sqlstate
from .driver import execute_script
from .driver import ssl_in_use
from .engine import safe_url
from .exceptions import BaselineRefusedError
from .exceptions import ConfigurationError
from .exceptions import DatabaseUnavailableError
from .exceptions import RetryExhaustedError
from .exceptions import SafeMigrateError
from .exceptions import StatementFailedError
from .exceptions import StatementRefusedError
from .exceptions import StepFailedError
from .generate import GenerateReport
from .generate import generate as generate_module
from .generate import load_metadata
from .ledger import LedgerRow
from .lint import check_steps
from .lint.findings import LintReport
from .phases import StepOutcome
from .phases.backfill import BackfillProgress
from .phases.backfill import progress_fields
from .phases.index import IndexTarget
from .phases.index import dedup_sql
from .phases.schema import check_schema_sql
from .recording import RecordingHandle
from .retry import RetryState
from .runner import Runner
from .runner import RunReport
from .runner import StepStatus
from .server_version import server_version
from .server_version import server_version_problem
from .settings import PREFIX
from .settings import MigrateSettings
from .sql import SqlSyntaxError
from .sql import StatementKind
from .sql import split_statements
from .steps import Phase
from .steps import Step
from .steps import StepRegistry
from .transaction import open_autocommit_or_dispose
from .transaction import release
from .transaction import run_with_retry_stats
from .transaction import send_idempotent
from .transaction import settings_policy

__all__ = [
    "BaselineReport",
    "DoctorCheck",
    "DoctorReport",
    "ExecReport",
    "PlanReport",
    "StatusReport",
    "baseline",
    "baseline_from_alembic",
    "check",
    "doctor",
    "execute",
    "generate",
    "plan",
    "run",
    "status",
]

logger = logging.getLogger(__name__)

BeforeSleep = t.Callable[[RetryState], None]
OnOutcome = t.Callable[[StepOutcome], None]

#: SQLSTATEs of "already exists": the database was migrated by another tool.
_ALREADY_EXISTS = frozenset({"42P07", "42701", "42710", "42P06", "42723", "42P16"})


def _iso(value: t.Any) -> t.Any:
    """A datetime as ISO 8601 text (JSON), anything else as it is."""
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else value


# -- error translation ---------------------------------------------------------------


def _is_connect_error(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", None) or exc)
    return bool(re.search(r"connection to server (at|on) .*failed", text, re.S))


@contextlib.contextmanager
def translate_db_errors(engine: sa.Engine) -> t.Iterator[None]:
    """Turn connection failures into :class:`DatabaseUnavailableError` (one line)."""
    url = safe_url(engine.url)
    try:
        yield
    except RetryExhaustedError as exc:
        last = exc.last_exception
        if classify_error(last) in {ErrorKind.CONNECT_FAILED, ErrorKind.DISCONNECT}:
            raise DatabaseUnavailableError(
                f"cannot reach {url} after {exc.attempts} attempt(s) in "
                f"{exc.elapsed_seconds:.1f}s: {describe_error(last)}",
                url=url,
            ) from exc
        raise
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        if _is_connect_error(exc) or classify_error(exc) is not ErrorKind.FATAL:
            raise DatabaseUnavailableError(
                f"cannot connect to {url}: {describe_error(exc)}", url=url
            ) from exc
        raise


# -- run ---------------------------------------------------------------------------


def run(
    settings: MigrateSettings,
    registry: StepRegistry,
    engine: sa.Engine,
    *,
    phases: t.Sequence[Phase | str] = (Phase.SCHEMA,),
    step_ids: t.Sequence[str] | None = None,
    dry_run: bool = False,
    max_seconds: float | None = None,
    before_sleep: BeforeSleep | None = None,
    on_progress: t.Callable[[BackfillProgress], None] | None = None,
    on_outcome: OnOutcome | None = None,
) -> RunReport:
    """Apply the pending steps of ``phases`` (see :meth:`Runner.run`).

    :param on_progress: called after each backfill batch (default: a log line
        every few seconds).
    :param on_outcome: called as soon as each step is applied (or skipped).
    :raises SafeMigrateError: its ``report`` lists the steps applied before it; an
        "already exists" failure says to adopt the database with ``baseline``.
    """
    parsed = [Phase.parse(p) for p in phases]
    outcomes: list[StepOutcome] = []

    def record(outcome: StepOutcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    runner = Runner(
        settings,
        registry,
        engine,
        before_sleep=before_sleep,
        on_progress=on_progress,
        on_outcome=record,
    )
    try:
        with translate_db_errors(engine):
            return runner.run(
                parsed, step_ids=step_ids, dry_run=dry_run, max_seconds=max_seconds
            )
    except SafeMigrateError as exc:
        if exc.report is None:
            exc.report = RunReport(
                phases=tuple(p.value for p in parsed), outcomes=outcomes
            )
        hinted = _baseline_hint(exc)
        if hinted is None:
            raise
        raise hinted from exc.__cause__


def _baseline_hint(exc: SafeMigrateError) -> StepFailedError | None:
    """The same failure, saying to run ``baseline``, when what the step creates
    already exists (the database was migrated by another tool); else None."""
    cause = exc.__cause__
    if not isinstance(exc, StepFailedError) or cause is None:
        return None
    if error_sqlstate(cause) not in _ALREADY_EXISTS:
        return None
    hinted = StepFailedError(
        f"{exc}. If another tool (Flask-Migrate, a startup script) already made "
        "these changes, record the steps as applied without running them: "
        "flask safe-migrate baseline --upto <last step already in the database> "
        "(or --from-alembic, for a database Flask-Migrate upgraded)",
        step_id=exc.step_id,
        phase=exc.phase,
    )
    hinted.report = exc.report
    return hinted


# -- status ------------------------------------------------------------------------


@dataclass
class StatusReport:
    """Every registered step and its state; ledger rows of unknown steps."""

    steps: list[StepStatus]
    ledger_exists: bool
    unknown_rows: list[LedgerRow] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Number of steps per state."""
        counts: dict[str, int] = {}
        for s in self.steps:
            counts[s.state] = counts.get(s.state, 0) + 1
        return counts

    def to_dict(self) -> dict[str, t.Any]:
        """The JSON shape of ``status --json``."""
        return {
            "ledger_exists": self.ledger_exists,
            "counts": self.counts,
            "steps": [_status_dict(s) for s in self.steps],
            "unknown_rows": [
                {"step_id": r.step_id, "phase": r.phase, "state": r.state}
                for r in self.unknown_rows
            ],
        }


def is_baselined(row: LedgerRow | None) -> bool:
    """Whether ``row`` was recorded by ``baseline`` (applied, never run here)."""
    return row is not None and row.is_applied and row.attempts == 0


def _status_dict(status: StepStatus) -> dict[str, t.Any]:
    row = status.row
    return {
        "id": status.step.id,
        "phase": status.step.phase.value,
        "kind": status.step.kind,
        "state": status.state,
        "baselined": is_baselined(row),
        "applied_at": _iso(row.applied_at) if row else None,
        "duration_seconds": row.duration_seconds if row else None,
        "attempts": row.attempts if row else 0,
        "progress": progress_fields(row.progress if row else None),
        "lease_owner": row.lease_owner if row else None,
        "checksum": status.step.checksum,
        "location": status.step.location,
    }


def status(
    settings: MigrateSettings,
    registry: StepRegistry,
    engine: sa.Engine,
    *,
    before_sleep: BeforeSleep | None = None,
) -> StatusReport:
    """Read the ledger (one query) and compare it with the registered steps."""
    runner = Runner(settings, registry, engine, before_sleep=before_sleep)
    with translate_db_errors(engine):
        rows = runner.read_ledger()
    known = {s.id for s in registry.steps()}
    return StatusReport(
        steps=runner.statuses(registry.steps(), rows or {}),
        ledger_exists=rows is not None,
        unknown_rows=[r for r in (rows or {}).values() if r.step_id not in known],
    )


# -- plan --------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedStep:
    """The SQL one pending step would send."""

    step: Step
    statements: tuple[str, ...]


@dataclass
class PlanReport:
    """What ``run`` would send, without sending it."""

    steps: list[PlannedStep]
    ledger_exists: bool

    def to_dict(self) -> dict[str, t.Any]:
        """The JSON shape of ``plan --json``."""
        return {
            "ledger_exists": self.ledger_exists,
            "steps": [
                {
                    "id": p.step.id,
                    "phase": p.step.phase.value,
                    "location": p.step.location,
                    "statements": list(p.statements),
                }
                for p in self.steps
            ],
        }


def record_step(step: Step) -> list[str]:
    """Return the SQL statements of ``step``: its SQL, or what its function sends.

    An index step with ``dedup_keep`` shows its de-duplication batch first.
    """
    if step.sql is not None and step.options.get("dedup_keep"):
        target = IndexTarget.from_options(step.options, step.sql)
        return [dedup_sql(target, 1000) + "  -- repeated until none", step.sql]
    if step.sql is not None:
        return [step.sql.strip()]
    assert step.fn is not None
    handle = RecordingHandle(step)
    step.fn(handle)
    return handle.statements


def plan(
    settings: MigrateSettings,
    registry: StepRegistry,
    engine: sa.Engine | None,
    *,
    phases: t.Sequence[Phase | str] = tuple(Phase),
    step_ids: t.Sequence[str] | None = None,
) -> PlanReport:
    """Return the SQL of the pending steps (every step when ``engine`` is None).

    With an engine it decides what is pending as ``run`` does (a dry run): an
    edited applied step or a blocking lint error fails ``plan`` as it fails ``run``.

    :raises ChecksumMismatchError: an applied step was edited.
    """
    parsed = [Phase.parse(p) for p in phases]
    if engine is None:
        pending = [s for s in registry.steps() if s.phase in parsed]
        for step in pending:
            if step.phase is Phase.SCHEMA and step.sql is not None:
                check_schema_sql(step, step.sql)
        ledger_exists = False
    else:
        runner = Runner(settings, registry, engine)
        with translate_db_errors(engine):
            pending = runner.run(parsed, step_ids=step_ids, dry_run=True).pending
            ledger_exists = runner.read_ledger() is not None
    return PlanReport(
        steps=[PlannedStep(s, tuple(record_step(s))) for s in pending],
        ledger_exists=ledger_exists,
    )


# -- exec --------------------------------------------------------------------------


@dataclass
class ExecReport:
    """The result of one statement run through the retry helper.

    ``rowcount`` is None when the server reports no row count (DDL).
    """

    columns: list[str]
    rows: list[tuple[t.Any, ...]]
    rowcount: int | None
    attempts: int
    elapsed_seconds: float

    def to_dict(self) -> dict[str, t.Any]:
        """The JSON shape of ``exec --json``: values as JSON types where they map."""
        return {
            "columns": self.columns,
            "rows": [[_json_value(v) for v in r] for r in self.rows],
            "rowcount": self.rowcount,
            "attempts": self.attempts,
            "elapsed_seconds": round(self.elapsed_seconds, 4),
        }


def _json_value(value: t.Any) -> t.Any:
    if isinstance(value, bool | int | float | str | dict | list) or value is None:
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)  # Decimal, UUID, intervals...


def format_value(value: t.Any) -> str:
    """A database value as ``exec --fetch`` prints it: ``1.5``, jsonb as JSON,
    a timestamptz with its zone, NULL as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, dt.datetime | dt.time):
        return (
            value.isoformat(sep=" ") if isinstance(value, dt.datetime) else str(value)
        )
    return str(value)


#: What ``exec`` refuses to send: each would outlive or break its transaction.
_REFUSED_KINDS = {
    StatementKind.SESSION_SETTING: "a session setting leaks into the pooled "
    "connection; use SET LOCAL inside a step",
    StatementKind.TRANSACTION_CONTROL: "exec runs each statement in its own "
    "transaction already",
}


def check_exec_sql(sql: str) -> None:
    """Refuse what ``exec`` must not send: two statements, a session SET, BEGIN.

    A syntax error is left to the server, which reports it with its position.

    :raises StatementRefusedError: one line saying why.
    """
    try:
        statements = split_statements(sql)
    except SqlSyntaxError:
        return
    if len(statements) != 1:
        raise StatementRefusedError(
            f"exec runs exactly one statement, got {len(statements)}: run them one "
            "at a time (or as a step)",
            sql=sql,
        )
    why = _REFUSED_KINDS.get(statements[0].kind)
    if why is not None:
        raise StatementRefusedError(
            f"exec refuses {statements[0].sql.split()[0].upper()}: {why}", sql=sql
        )


def execute(
    settings: MigrateSettings,
    engine: sa.Engine,
    sql: str,
    *,
    fetch: bool = False,
    before_sleep: BeforeSleep | None = None,
) -> ExecReport:
    """Run one SQL statement in its own transaction, retried through disconnects.

    :raises StatementRefusedError: not one statement, or one that would leak.
    :raises StatementFailedError: the server rejected it (one line, with SQLSTATE).
    :raises DatabaseUnavailableError: no connection could be made.
    """
    check_exec_sql(sql)
    policy = settings_policy(settings, before_sleep=before_sleep)

    def work(
        conn: sa.Connection,
    ) -> tuple[list[str], list[tuple[t.Any, ...]], int | None]:
        result = execute_script(conn, sql)
        if result.returns_rows:
            rows = [tuple(r) for r in result.fetchall()]
            return list(result.keys()), rows if fetch else [], len(rows)
        return [], [], result.rowcount if result.rowcount >= 0 else None

    started = time.monotonic()
    with translate_db_errors(engine):
        try:
            (columns, rows, count), stats = run_with_retry_stats(
                engine, work, policy=policy
            )
        except sa.exc.DBAPIError as exc:
            if _is_connect_error(exc):
                raise
            raise StatementFailedError(
                f"statement failed: {describe_error(exc)}", sql=sql
            ) from exc
    return ExecReport(
        columns=columns,
        rows=rows,
        rowcount=count,
        attempts=stats.attempts,
        elapsed_seconds=time.monotonic() - started,
    )


# -- baseline ----------------------------------------------------------------------


@dataclass
class BaselineReport:
    """Steps recorded as applied without being run."""

    recorded: list[str]
    already_applied: list[str]

    def to_dict(self) -> dict[str, t.Any]:
        """The JSON shape of ``baseline --json``."""
        return {"recorded": self.recorded, "already": self.already_applied}


#: Tables of the user's schemas, the ledger excepted (``baseline`` on nothing).
_USER_TABLES_SQL = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.oid IS DISTINCT FROM to_regclass({ledger})
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%'
"""


def baseline(
    settings: MigrateSettings,
    registry: StepRegistry,
    engine: sa.Engine,
    *,
    upto: str | None = None,
    force: bool = False,
) -> BaselineReport:
    """Record steps as applied without running them, to adopt an existing database.

    Every step in run order up to and including ``upto`` (all steps when None) that
    has no ledger row gets one, in one transaction under the migration lock.

    :param force: record the steps even in a database without tables (where
        they were most likely never applied: ``run`` is what it needs).
    :raises BaselineRefusedError: no user table exists and ``force`` is False.
    """
    runner = Runner(settings, registry, engine)
    steps = registry.steps()
    if upto is not None:
        last = registry.get(upto)
        steps = steps[: steps.index(last) + 1]
    with translate_db_errors(engine):
        rows = runner.read_ledger()
        todo = [s for s in steps if s.id not in (rows or {})]
        already = [s.id for s in steps if s.id in (rows or {})]
        if todo and not force:
            _refuse_empty_baseline(runner, len(todo))
        if rows is None:
            runner.ensure_ledger()
        if todo:
            inserts = _record_applied_sql(runner, todo)
            lock = runner.ledger.lock_sql(settings.advisory_lock_wait_seconds)

            def work(conn: sa.Connection) -> None:
                execute_script(conn, ";\n".join([lock, *inserts]))

            run_with_retry_stats(engine, work, policy=runner.policy())
    return BaselineReport(recorded=[s.id for s in todo], already_applied=already)


def _refuse_empty_baseline(runner: Runner, count: int) -> None:
    ledger = runner.ledger.qualified.replace("'", "''")
    tables = send_idempotent(
        runner.engine, _USER_TABLES_SQL.format(ledger=f"'{ledger}'"), runner.policy()
    )[0][0]
    if not tables:
        raise BaselineRefusedError(
            f"the database has no tables: recording {count} step(s) as applied "
            "would skip them for good. Run `flask safe-migrate run` to apply them, "
            "or pass --force to record them anyway"
        )


def _record_applied_sql(runner: Runner, steps: t.Sequence[Step]) -> list[str]:
    """Ledger inserts that record ``steps`` applied, keeping rows already there."""
    return [
        runner.ledger.insert_applied_sql(
            step_id=s.id, phase=s.phase.value, checksum=s.checksum, attempts=0
        )
        + " ON CONFLICT (step_id) DO NOTHING"
        for s in steps
    ]


def baseline_from_alembic(
    settings: MigrateSettings, registry: StepRegistry, engine: sa.Engine
) -> BaselineReport:
    """Adopt a database that Alembic (Flask-Migrate) migrated: no DDL is sent.

    Reads ``alembic_version`` and records the revision it names and every revision
    before it as applied, in one transaction under the migration lock (the same
    transaction reads ``alembic_version``), so several processes may run it at once.

    :raises ConfigurationError: no revisions are registered, the database has no
        ``alembic_version``, or it names a revision that is not registered.
    """
    if not any(revisions.is_revision(s) for s in registry.steps()):
        raise ConfigurationError(
            "no Alembic revisions are registered: call migrate.alembic(...) or set "
            "SAFE_MIGRATE_ALEMBIC_DIRECTORY",
            key="SAFE_MIGRATE_ALEMBIC_DIRECTORY",
        )
    runner = Runner(settings, registry, engine)
    lock = runner.ledger.lock_sql(settings.advisory_lock_wait_seconds)

    def work(conn: sa.Connection) -> list[Step]:
        execute_script(conn, lock)
        versions = _alembic_versions(conn)
        steps = revisions.revisions_upto(registry.steps(), versions)
        if steps:
            sql = ";\n".join(_record_applied_sql(runner, steps))
            execute_script(conn, sql)
        return steps

    with translate_db_errors(engine):
        rows = runner.read_ledger()
        if rows is None:
            runner.ensure_ledger()
            rows = {}
        steps, _ = run_with_retry_stats(engine, work, policy=runner.policy())
    return BaselineReport(
        recorded=[s.id for s in steps if s.id not in rows],
        already_applied=[s.id for s in steps if s.id in rows],
    )


def _alembic_versions(conn: sa.Connection) -> list[str]:
    exists = conn.exec_driver_sql(
        "SELECT to_regclass('alembic_version') IS NOT NULL"
    ).scalar()
    if exists:
        rows = conn.exec_driver_sql(revisions.ALEMBIC_VERSION_SQL)
        return [str(r[0]) for r in rows]
    raise ConfigurationError(
        "this database has no alembic_version table: it was not migrated by "
        "Alembic/Flask-Migrate, so there is nothing to adopt (use `baseline` "
        "without --from-alembic to record steps by hand)",
        key="SAFE_MIGRATE_ALEMBIC_DIRECTORY",
    )


# -- doctor ------------------------------------------------------------------------


@dataclass(frozen=True)
class DoctorCheck:
    """One diagnosis line: ``ok``, a ``warning`` (ok, but worth a look) or a FAIL."""

    name: str
    ok: bool
    detail: str
    warning: bool = False

    @property
    def label(self) -> str:
        """``ok``, ``WARN`` or ``FAIL``."""
        if not self.ok:
            return "FAIL"
        return "WARN" if self.warning else "ok"


@dataclass
class DoctorReport:
    """Reachability, TLS, server, latency and pooler hints."""

    url: str
    checks: list[DoctorCheck]

    @property
    def ok(self) -> bool:
        """Whether no check failed (warnings do not fail)."""
        return all(c.ok for c in self.checks)

    @property
    def connected(self) -> bool:
        """Whether the connection itself succeeded."""
        return bool(self.checks) and self.checks[0].ok

    def to_dict(self) -> dict[str, t.Any]:
        """The JSON shape of ``doctor --json``."""
        return {
            "url": self.url,
            "ok": self.ok,
            "checks": [
                {"name": c.name, "ok": c.ok, "warning": c.warning, "detail": c.detail}
                for c in self.checks
            ],
        }


_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def doctor(settings: MigrateSettings, engine: sa.Engine) -> DoctorReport:
    """Diagnose the connection the migrations use; database errors become checks.

    A FAIL is a real failure (no connection, a server older than 13, a query that
    fails); what is only worth a look (no TLS to a remote host) is a warning.
    """
    url = safe_url(engine.url)
    try:
        started = time.monotonic()
        conn = open_autocommit_or_dispose(engine)
    except Exception as exc:
        return DoctorReport(url, [DoctorCheck("connect", False, describe_error(exc))])
    checks = [
        DoctorCheck("connect", True, f"connected in {time.monotonic() - started:.3f}s")
    ]
    try:
        checks.append(_tls_check(conn))
        checks.append(_server_check(conn))
        checks.append(_round_trip_check(conn))
        checks.append(_pooler_check(engine, conn))
        checks.append(_ledger_check(settings, conn))
    except Exception as exc:
        checks.append(DoctorCheck("query", False, describe_error(exc)))
    finally:
        release(conn)
        engine.dispose()
    return DoctorReport(url=url, checks=checks)


def _tls_check(conn: sa.Connection) -> DoctorCheck:
    info = getattr(conn.connection.dbapi_connection, "info", None)
    host = str(getattr(info, "host", "") or "")
    if host.startswith("/") or host.startswith("@"):
        return DoctorCheck("tls", True, f"not applicable: Unix socket in {host}")
    if ssl_in_use(conn):  # psycopg 3 has it on pgconn, not on info
        return DoctorCheck("tls", True, "TLS in use")
    if host in _LOCAL_HOSTS:
        return DoctorCheck("tls", True, f"no TLS (local connection to {host})")
    return DoctorCheck(
        "tls", True, f"no TLS to {host}: add ?sslmode=require", warning=True
    )


def _server_check(conn: sa.Connection) -> DoctorCheck:
    version = server_version(conn.dialect)
    problem = server_version_problem(version)
    shown = "PostgreSQL " + ".".join(map(str, version or ()))
    return DoctorCheck("server", problem is None, problem or shown)


def _round_trip_check(conn: sa.Connection) -> DoctorCheck:
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        conn.exec_driver_sql("SELECT 1").scalar()
        times.append(time.monotonic() - t0)
    return DoctorCheck("round-trip", True, f"{min(times) * 1000:.2f} ms (best of 3)")


_BACKEND_PID = "SELECT pg_backend_pid()"


def _pooler_check(engine: sa.Engine, conn: sa.Connection) -> DoctorCheck:
    """Tell transaction pooling from session pooling and a direct connection.

    Two client connections open at once are served by one backend only under
    transaction (or statement) pooling: each statement of the first returns its
    server connection to the pool, and the second takes that same one. Under
    session pooling or directly, each client keeps its own backend.
    """
    first = conn.exec_driver_sql(_BACKEND_PID).scalar()
    other = open_autocommit_or_dispose(engine)
    try:
        seen = {other.exec_driver_sql(_BACKEND_PID).scalar() for _ in range(2)}
        seen |= {conn.exec_driver_sql(_BACKEND_PID).scalar() for _ in range(2)}
        second = other.exec_driver_sql(_BACKEND_PID).scalar()
    finally:
        release(other)
    if first == second or len(seen) < 2:
        return DoctorCheck(
            "pooler",
            True,
            "transaction pooling: two client connections shared one server backend "
            "(fine: every step is transaction-scoped)",
        )
    port = conn.exec_driver_sql("SELECT current_setting('port')").scalar()
    url_port = engine.url.port
    if url_port is not None and str(port) != str(url_port):
        return DoctorCheck(
            "pooler",
            True,
            f"session pooling, or a proxy: the server listens on {port}, the URL "
            f"says {url_port}",
        )
    return DoctorCheck("pooler", True, "direct connection (no pooler detected)")


def _ledger_check(settings: MigrateSettings, conn: sa.Connection) -> DoctorCheck:
    ledger = Runner(settings, StepRegistry(), conn.engine).ledger
    exists = conn.exec_driver_sql(
        f"SELECT to_regclass('{ledger.qualified.replace(chr(39), chr(39) * 2)}')"
    ).scalar()
    state = "exists" if exists else "not created yet (the first run creates it)"
    return DoctorCheck("ledger", True, f"{ledger.qualified} {state}")


# -- check -------------------------------------------------------------------------


def check(
    settings: MigrateSettings,
    registry: StepRegistry,
    *,
    paths: t.Sequence[str] = (),
    squawk: bool = True,
) -> LintReport:
    """Lint every registered step and verify the migration code; no database.

    Our rules run on each statement of each step (function steps are recorded,
    as by :func:`plan`), squawk's when it is installed, and the verifier reads the
    modules that register steps plus ``paths``. Rules in
    ``settings.lint_disabled_rules`` are skipped.

    :param paths: more Python files or directories for the verifier.
    :param squawk: run squawk's DDL-safety rules too, when squawk is installed.
    :returns: the report; ``report.ok`` is False when there are error findings.
    """
    return check_steps(
        registry.steps(),
        paths=paths,
        disabled=settings.lint_disabled_rules,
        squawk=squawk,
    )


# -- generate ----------------------------------------------------------------------


def generate(
    settings: MigrateSettings,
    registry: StepRegistry,
    engine: sa.Engine,
    *,
    message: str,
    registrar: str,
    metadata: sa.MetaData | None = None,
    output: str | None = None,
    dry_run: bool = False,
    check: bool = False,
    allow_destructive: bool = False,
) -> GenerateReport:
    """Write a steps module from the models (see :func:`.generate.generate`).

    :param metadata: the app's models (Flask-SQLAlchemy's ``db.metadata``);
        ``SAFE_MIGRATE_METADATA`` wins when set.
    :raises ConfigurationError: no models to compare.
    """
    if settings.metadata is not None:
        metadata = load_metadata(settings.metadata)
    if metadata is None:
        raise ConfigurationError(
            "no models to compare: pass the Flask-SQLAlchemy db to init_app(app, db) "
            "or set it to 'pkg.module:metadata'",
            key=PREFIX + "METADATA",
        )
    with translate_db_errors(engine):
        return generate_module(
            settings,
            registry,
            engine,
            metadata,
            message=message,
            registrar=registrar,
            output=output,
            dry_run=dry_run,
            check=check,
            allow_destructive=allow_destructive,
        )
