"""The commands (run, status, plan, execute, baseline, doctor): the core entry points.

Each takes explicit ``(settings, registry, engine)`` plus options, returns a report
dataclass and prints nothing. Database errors are translated here, at one boundary,
into :mod:`.exceptions` with one readable line and the password hidden.
"""

from __future__ import annotations

import contextlib
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
from .engine import safe_url
from .exceptions import ConfigurationError
from .exceptions import DatabaseUnavailableError
from .exceptions import RetryExhaustedError
from .exceptions import StatementFailedError
from .ledger import LedgerRow
from .lint import check_steps
from .lint.findings import LintReport
from .phases.backfill import BackfillProgress
from .phases.index import IndexTarget
from .phases.index import dedup_sql
from .phases.schema import check_schema_sql
from .recording import RecordingHandle
from .retry import RetryState
from .runner import Runner
from .runner import RunReport
from .runner import StepStatus
from .settings import MigrateSettings
from .steps import Phase
from .steps import Step
from .steps import StepRegistry
from .transaction import open_autocommit_or_dispose
from .transaction import release
from .transaction import run_with_retry_stats
from .transaction import settings_policy

__all__ = [
    "DoctorReport",
    "ExecReport",
    "PlanReport",
    "StatusReport",
    "baseline",
    "baseline_from_alembic",
    "doctor",
    "execute",
    "plan",
    "run",
    "status",
]

logger = logging.getLogger(__name__)

_NO_PARAMS = {"no_parameters": True}
BeforeSleep = t.Callable[[RetryState], None]


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
) -> RunReport:
    """Apply the pending steps of ``phases`` (see :meth:`Runner.run`).

    :param on_progress: called after each backfill batch (default: a log line
        every few seconds).
    """
    runner = Runner(
        settings,
        registry,
        engine,
        before_sleep=before_sleep,
        on_progress=on_progress,
    )
    with translate_db_errors(engine):
        return runner.run(
            [Phase.parse(p) for p in phases],
            step_ids=step_ids,
            dry_run=dry_run,
            max_seconds=max_seconds,
        )


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
    """Return the SQL of the pending steps (every step when ``engine`` is None)."""
    rows: dict[str, LedgerRow] | None = None
    runner: Runner | None = None
    if engine is not None:
        runner = Runner(settings, registry, engine)
        with translate_db_errors(engine):
            rows = runner.read_ledger()
    selected = (
        runner.select_steps([Phase.parse(p) for p in phases], step_ids)
        if runner
        else [
            s for s in registry.steps() if s.phase in {Phase.parse(p) for p in phases}
        ]
    )
    for step in selected:
        if step.phase is Phase.SCHEMA and step.sql is not None:
            check_schema_sql(step, step.sql)
    pending = [
        s
        for s in selected
        if rows is None or s.id not in rows or not rows[s.id].is_applied
    ]
    return PlanReport(
        steps=[PlannedStep(s, tuple(record_step(s))) for s in pending],
        ledger_exists=rows is not None,
    )


# -- exec --------------------------------------------------------------------------


@dataclass
class ExecReport:
    """The result of one statement run through the retry helper."""

    columns: list[str]
    rows: list[tuple[t.Any, ...]]
    rowcount: int
    attempts: int
    elapsed_seconds: float


def execute(
    settings: MigrateSettings,
    engine: sa.Engine,
    sql: str,
    *,
    fetch: bool = False,
    before_sleep: BeforeSleep | None = None,
) -> ExecReport:
    """Run one SQL string in its own transaction, retried through disconnects.

    :raises StatementFailedError: the server rejected it (one line, with SQLSTATE).
    :raises DatabaseUnavailableError: no connection could be made.
    """
    policy = settings_policy(settings, before_sleep=before_sleep)

    def work(conn: sa.Connection) -> tuple[list[str], list[tuple[t.Any, ...]], int]:
        result = conn.exec_driver_sql(sql, execution_options=_NO_PARAMS)
        if result.returns_rows:
            rows = [tuple(r) for r in result.fetchall()]
            return list(result.keys()), rows if fetch else [], len(rows)
        return [], [], result.rowcount

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


def baseline(
    settings: MigrateSettings,
    registry: StepRegistry,
    engine: sa.Engine,
    *,
    upto: str | None = None,
) -> BaselineReport:
    """Record steps as applied without running them, to adopt an existing database.

    Every step in run order up to and including ``upto`` (all steps when None) that
    has no ledger row gets one, in one transaction under the migration lock.
    """
    runner = Runner(settings, registry, engine)
    steps = registry.steps()
    if upto is not None:
        last = registry.get(upto)
        steps = steps[: steps.index(last) + 1]
    with translate_db_errors(engine):
        rows = runner.read_ledger()
        if rows is None:
            runner.ensure_ledger()
            rows = {}
        todo = [s for s in steps if s.id not in rows]
        already = [s.id for s in steps if s.id in rows]
        if todo:
            inserts = _record_applied_sql(runner, todo)
            lock = runner.ledger.lock_sql(settings.advisory_lock_wait_seconds)

            def work(conn: sa.Connection) -> None:
                conn.exec_driver_sql(
                    ";\n".join([lock, *inserts]), execution_options=_NO_PARAMS
                )

            run_with_retry_stats(engine, work, policy=runner.policy())
    return BaselineReport(recorded=[s.id for s in todo], already_applied=already)


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
        conn.exec_driver_sql(lock, execution_options=_NO_PARAMS)
        versions = _alembic_versions(conn)
        steps = revisions.revisions_upto(registry.steps(), versions)
        if steps:
            sql = ";\n".join(_record_applied_sql(runner, steps))
            conn.exec_driver_sql(sql, execution_options=_NO_PARAMS)
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
    """One diagnosis line."""

    name: str
    ok: bool
    detail: str


@dataclass
class DoctorReport:
    """Reachability, TLS, server, latency and pooler hints."""

    url: str
    checks: list[DoctorCheck]

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return all(c.ok for c in self.checks)


def doctor(settings: MigrateSettings, engine: sa.Engine) -> DoctorReport:
    """Diagnose the connection the migrations use; database errors become checks."""
    url = safe_url(engine.url)
    checks: list[DoctorCheck] = []
    try:
        started = time.monotonic()
        conn = open_autocommit_or_dispose(engine)
    except Exception as exc:
        checks.append(DoctorCheck("connect", False, describe_error(exc)))
        return DoctorReport(url=url, checks=checks)
    try:
        checks.append(
            DoctorCheck(
                "connect", True, f"connected in {time.monotonic() - started:.3f}s"
            )
        )
        raw = conn.connection.dbapi_connection
        ssl_in_use = bool(getattr(getattr(raw, "info", None), "ssl_in_use", False))
        checks.append(
            DoctorCheck(
                "tls",
                ssl_in_use,
                "TLS in use" if ssl_in_use else "no TLS: add ?sslmode=require",
            )
        )
        version = conn.exec_driver_sql("SHOW server_version_num").scalar()
        major = int(str(version)) // 10000
        checks.append(
            DoctorCheck(
                "server",
                major >= 13,
                f"PostgreSQL {major}" + ("" if major >= 13 else " (13+ required)"),
            )
        )
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            conn.exec_driver_sql("SELECT 1").scalar()
            times.append(time.monotonic() - t0)
        checks.append(
            DoctorCheck("round-trip", True, f"{min(times) * 1000:.1f} ms (best of 3)")
        )
        pids = {
            conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() for _ in range(4)
        }
        backend = conn.exec_driver_sql(
            "SELECT inet_server_port(), current_setting('port')"
        ).one()
        pooled = backend[0] is not None and str(backend[0]) != str(engine.url.port)
        if len(pids) > 1:
            mode = "transaction (or statement) pooling: backend changed between queries"
        elif pooled:
            mode = "a pooler in session mode, or a proxy (server port differs)"
        else:
            mode = "direct connection (no pooler detected)"
        checks.append(DoctorCheck("pooler", True, mode))
        runner_ledger = Runner(settings, StepRegistry(), engine).ledger
        exists = conn.exec_driver_sql(
            f"SELECT to_regclass('{runner_ledger.qualified.replace(chr(39), '')}')"
        ).scalar()
        checks.append(
            DoctorCheck(
                "ledger",
                True,
                f"{runner_ledger.qualified} "
                + (
                    "exists" if exists else "not created yet (the first run creates it)"
                ),
            )
        )
    except Exception as exc:
        checks.append(DoctorCheck("query", False, describe_error(exc)))
    finally:
        release(conn)
        engine.dispose()
    return DoctorReport(url=url, checks=checks)


# -- check -------------------------------------------------------------------------

__all__ += ["check"]


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
