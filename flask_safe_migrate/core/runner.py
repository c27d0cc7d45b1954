"""Runner: read the ledger once, decide what is pending, drive the phase runners."""

from __future__ import annotations

import itertools
import logging
import random
import time
import typing as t
from dataclasses import dataclass
from dataclasses import field

import sqlalchemy as sa

from . import revisions
from .disconnects import error_sqlstate
from .exceptions import ChecksumMismatchError
from .exceptions import LintViolationError
from .exceptions import StepFailedError
from .ledger import Ledger
from .ledger import LedgerRow
from .lint import run_time_findings
from .phases import PhaseRunner
from .phases import StepOutcome
from .phases.backfill import BackfillPhase
from .phases.backfill import BackfillProgress
from .phases.index import IndexPhase
from .phases.pipeline import SchemaPipeline
from .phases.pipeline import is_pipelined
from .phases.schema import SchemaPhase
from .phases.schema import check_schema_sql
from .retry import RetryPolicy
from .retry import RetryState
from .retry import log_before_sleep
from .server_version import require_supported_server
from .settings import MigrateSettings
from .steps import Phase
from .steps import Step
from .steps import StepRegistry
from .transaction import send_idempotent

__all__ = ["RunReport", "Runner", "StepStatus"]

logger = logging.getLogger(__name__)

_NO_PARAMS = {"no_parameters": True}
_UNDEFINED_TABLE = "42P01"


@dataclass(frozen=True)
class StepStatus:
    """A registered step and what the ledger says of it.

    ``state`` is ``applied``, ``pending``, ``changed`` (applied, but its checksum
    differs from the code's) or ``running`` (a backfill with a checkpoint).
    """

    step: Step
    state: str
    row: LedgerRow | None = None


@dataclass
class RunReport:
    """What a run did, step by step."""

    phases: tuple[str, ...]
    dry_run: bool = False
    outcomes: list[StepOutcome] = field(default_factory=list)
    #: The pending steps this run is to apply, in registration order.
    pending: list[Step] = field(default_factory=list)
    #: The pending steps this run did not reach because their phase was not in the
    #: run, and every pending step registered after the first of them (which is
    #: where the run stopped). Empty when nothing waits.
    waiting: list[Step] = field(default_factory=list)
    changed: list[StepStatus] = field(default_factory=list)
    stopped_by_budget: bool = False
    elapsed_seconds: float = 0.0

    @property
    def up_to_date(self) -> bool:
        """Whether this run had nothing to apply (steps may still be ``waiting``)."""
        return not self.pending

    @property
    def applied(self) -> list[StepOutcome]:
        """Outcomes of the steps this run applied."""
        return [o for o in self.outcomes if o.status == "applied"]

    def to_dict(self) -> dict[str, t.Any]:
        """The JSON shape of ``run --json``."""
        return {
            "phases": list(self.phases),
            "dry_run": self.dry_run,
            "up_to_date": self.up_to_date,
            "outcomes": [
                {
                    "step_id": o.step_id,
                    "phase": o.phase,
                    "status": o.status,
                    "attempts": o.attempts,
                    "duration_seconds": round(o.duration_seconds, 4),
                    "detail": o.detail,
                }
                for o in self.outcomes
            ],
            "pending": [s.id for s in self.pending],
            "waiting": [s.id for s in self.waiting],
            "changed": [s.step.id for s in self.changed],
            "stopped_by_budget": self.stopped_by_budget,
            "elapsed_seconds": round(self.elapsed_seconds, 4),
        }


class Runner:
    """Apply the pending steps of a registry through one migration engine."""

    def __init__(
        self,
        settings: MigrateSettings,
        registry: StepRegistry,
        engine: sa.Engine,
        *,
        sleep: t.Callable[[float], None] = time.sleep,
        clock: t.Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        before_sleep: t.Callable[[RetryState], None] | None = None,
        on_progress: t.Callable[[BackfillProgress], None] | None = None,
        on_outcome: t.Callable[[StepOutcome], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_outcome = on_outcome
        self.registry = registry
        self.engine = engine
        self.ledger = Ledger(settings.ledger_table, settings.ledger_schema)
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._before_sleep = before_sleep or log_before_sleep(logger)
        timing: dict[str, t.Any] = {
            "sleep": sleep,
            "clock": clock,
            "rng": rng,
            "before_sleep": self._before_sleep,
        }
        self.schema = SchemaPhase(settings, engine, self.ledger, **timing)
        self.index = IndexPhase(settings, engine, self.ledger, **timing)
        self.backfill = BackfillPhase(
            settings, engine, self.ledger, on_progress=on_progress, **timing
        )
        #: Consecutive pending SQL schema steps, several per message.
        self.pipeline = SchemaPipeline(self.schema, sleep=sleep, rng=rng)
        #: How each phase applies a step.
        self.phases: dict[Phase, PhaseRunner] = {
            Phase.SCHEMA: self.schema,
            Phase.INDEX: self.index,
            Phase.BACKFILL: self.backfill,
        }

    # -- the ledger ------------------------------------------------------------

    def policy(self) -> RetryPolicy:
        """The disconnect retry policy built from the settings."""
        return self.schema.policy()

    def read_ledger(self) -> dict[str, LedgerRow] | None:
        """Read every ledger row in one query; None when the ledger does not exist."""
        try:
            rows = send_idempotent(
                self.engine, self.ledger.select_all_sql(), self.policy()
            )
        except sa.exc.DBAPIError as exc:
            if error_sqlstate(exc) == _UNDEFINED_TABLE:
                return None
            raise
        return {r[0]: self.ledger.row(r) for r in rows}

    def _query(self, sql: str) -> list[tuple[t.Any, ...]]:
        """Run one read-only query, retried whole on disconnects."""
        return send_idempotent(self.engine, sql, self.policy())

    def ensure_ledger(self) -> None:
        """Create the ledger if missing, under the migration lock (one message)."""
        message = ";\n".join(
            [
                "BEGIN",
                self.ledger.lock_sql(self.settings.advisory_lock_wait_seconds),
                self.ledger.create_sql(),
                "COMMIT",
            ]
        )
        send_idempotent(self.engine, message, self.policy())
        logger.info("ledger %s is ready", self.ledger.qualified)

    # -- deciding ----------------------------------------------------------------

    def select_steps(
        self, phases: t.Sequence[Phase], step_ids: t.Sequence[str] | None = None
    ) -> list[Step]:
        """The steps of ``phases`` in registration order, or just ``step_ids``."""
        if step_ids:
            chosen = {self.registry.get(i).id for i in step_ids}
            return [s for s in self.registry.steps() if s.id in chosen]
        return [s for s in self.registry.steps() if s.phase in phases]

    def statuses(
        self, steps: t.Sequence[Step], rows: t.Mapping[str, LedgerRow]
    ) -> list[StepStatus]:
        """Compare each step with its ledger row."""
        result = []
        for step in steps:
            row = rows.get(step.id)
            if row is None:
                state = "pending"
            elif row.checksum != step.checksum and row.is_applied:
                state = "changed"
            elif row.is_applied:
                state = "applied"
            else:
                state = row.state
            result.append(StepStatus(step=step, state=state, row=row))
        return result

    def preflight(self, steps: t.Sequence[Step]) -> None:
        """Refuse the whole run before anything is sent if any SQL step is invalid.

        Then, with ``lint_on_run``, lint the SQL steps with our own rules (no
        squawk, no function step is run: this is on the boot path) and refuse
        error findings of steps that are not applied yet. The ledger is read
        only when there is such a finding, so a clean boot costs nothing more.

        :raises StepRefusedError: a schema step's SQL is invalid or not allowed.
        :raises LintViolationError: error findings (not suppressed inline, not in
            ``lint_disabled_rules``) in pending steps.
        """
        parsed = {}
        for step in steps:
            if step.phase is Phase.SCHEMA and step.sql is not None:
                parsed[step.id] = check_schema_sql(step, step.sql)
        if not self.settings.lint_on_run:
            return
        findings = run_time_findings(
            steps, disabled=self.settings.lint_disabled_rules, parsed=parsed
        )
        if not findings:
            return
        # Only now read the ledger: an applied step is never run again, so its
        # findings do not block (whichever runner applied it).
        rows = self.read_ledger() or {}
        blocking = [
            f
            for f in findings
            if f.step_id not in rows or not rows[f.step_id].is_applied
        ]
        if not blocking:
            return
        shown = "; ".join(f"{f.describe()} ({f.hint})" for f in blocking[:3])
        more = f"; and {len(blocking) - 3} more" if len(blocking) > 3 else ""
        raise LintViolationError(
            f"{len(blocking)} lint error(s) block the run: {shown}{more}. Run "
            "`flask safe-migrate check` for details; fix the step, add "
            "`-- safe-migrate: ignore RULE reason` on the statement, or set "
            "SAFE_MIGRATE_LINT_ON_RUN=false",
            findings=blocking,
        )

    # -- running -----------------------------------------------------------------

    def run(
        self,
        phases: t.Sequence[Phase] = (Phase.SCHEMA,),
        *,
        step_ids: t.Sequence[str] | None = None,
        dry_run: bool = False,
        max_seconds: float | None = None,
    ) -> RunReport:
        """Apply the pending steps in registration order, each exactly once.

        Each step runs in its own phase's way. A step of a phase not in ``phases``
        stops the run: it and the pending steps after it are the report's
        ``waiting`` (the boot run, schema only, stops before the first pending
        index or backfill step). With ``step_ids``, just those steps run.
        On an up-to-date database this costs one query. Changed steps are refused
        (or only warned about, with ``SAFE_MIGRATE_CHANGED_STEPS=warn``).
        ``on_outcome`` is called with each step's outcome as soon as it is known.

        :raises StepRefusedError: a step's SQL is invalid or not allowed (nothing ran).
        :raises ChecksumMismatchError: an applied step was edited.
        :raises StepFailedError: a step failed; ``.report`` has what ran before it.
        :raises LockNotAcquiredError: a lock stayed unavailable past its budget.
        :raises UnsupportedServerError: the server is PostgreSQL 12 or older.
        """
        started = self._clock()
        report = RunReport(phases=tuple(p.value for p in phases), dry_run=dry_run)
        steps = self.select_steps(phases, step_ids)
        self.preflight(steps)
        rows = self.read_ledger()
        require_supported_server(self.engine.dialect)  # before anything is written
        revisions.check_adopted(steps, rows or {}, self._query)
        if rows is None:
            rows = {}
            if not dry_run:
                self.ensure_ledger()
        self._plan(report, phases, step_ids, rows)
        if dry_run:
            report.outcomes = [
                StepOutcome(s.id, s.phase.value, "planned") for s in report.pending
            ]
        elif report.pending:
            self._apply_pending(report, started, max_seconds)
        if report.waiting:
            logger.info(
                "stopped before step %s (%s phase): %d step(s) wait for a run of "
                "all phases",
                report.waiting[0].id,
                report.waiting[0].phase.value,
                len(report.waiting),
            )
        report.elapsed_seconds = self._clock() - started
        return report

    def _plan(
        self,
        report: RunReport,
        phases: t.Sequence[Phase],
        step_ids: t.Sequence[str] | None,
        rows: t.Mapping[str, LedgerRow],
    ) -> None:
        """Fill ``report.changed``, ``pending`` and ``waiting`` from the ledger."""
        chosen = self.select_steps(list(Phase), step_ids)
        statuses = self.statuses(chosen, rows)
        report.changed = [
            s
            for s in statuses
            if s.state == "changed" and (step_ids or s.step.phase in phases)
        ]
        if report.changed:
            self._on_changed(report.changed)
        pending = [s.step for s in statuses if s.state not in ("applied", "changed")]
        outside = [i for i, s in enumerate(pending) if s.phase not in phases]
        stop = outside[0] if outside and not step_ids else len(pending)
        report.pending, report.waiting = pending[:stop], pending[stop:]

    def _apply_pending(
        self, report: RunReport, started: float, max_seconds: float | None
    ) -> None:
        deadline = None if max_seconds is None else started + max_seconds
        done = 0
        while done < len(report.pending):
            if deadline is not None and self._clock() >= deadline:
                logger.info("time budget of %.1fs used; stopping", max_seconds)
                report.stopped_by_budget = True
                return
            try:
                done = self._apply_next(report, done, deadline)
            except StepFailedError as exc:
                report.elapsed_seconds = self._clock() - started
                exc.report = report  # the partial report
                raise
            if report.stopped_by_budget:
                return

    def _apply_next(self, report: RunReport, done: int, deadline: float | None) -> int:
        """Apply the next pending step, or the run of SQL schema steps it starts
        (pipelined, several per message); return how many are done now."""
        pending = report.pending
        group = list(itertools.takewhile(is_pipelined, pending[done:]))
        if group:
            count = self.pipeline.apply(
                group,
                lambda o: self._record(report, o),
                deadline=deadline,
                clock=self._clock,
            )
            report.stopped_by_budget = count < len(group)
            return done + count
        step = pending[done]
        outcome = self.phases[step.phase].apply(step, deadline=deadline)
        self._record(report, outcome)
        report.stopped_by_budget = outcome.status == "partial"
        return done + 1

    def _record(self, report: RunReport, outcome: StepOutcome) -> None:
        report.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def _on_changed(self, changed: list[StepStatus]) -> None:
        details = "; ".join(
            f"{s.step.id} ({s.step.location}): ledger checksum "
            f"{(s.row.checksum if s.row else '')[:12]}, code checksum "
            f"{s.step.short_checksum}"
            for s in changed
        )
        if self.settings.changed_steps == "warn":
            logger.warning("applied steps were changed since: %s", details)
            return
        raise ChecksumMismatchError(
            f"{len(changed)} applied step(s) changed since they were applied: "
            f"{details}. Applied steps are never re-run: restore the original and "
            "add a new step for the change, or set SAFE_MIGRATE_CHANGED_STEPS=warn "
            "to run anyway",
            step_ids=[s.step.id for s in changed],
        )
