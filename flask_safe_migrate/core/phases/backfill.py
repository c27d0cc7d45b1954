"""The backfill phase: keyset batches, each one short transaction with its checkpoint.

A declarative backfill (``migrate.backfill(id, table=, key=, set=, where=)``) sends
each batch as **one message** (one round trip), run by PostgreSQL as one implicit
transaction:

    SET LOCAL lock_timeout = ...; SET LOCAL statement_timeout = ...;
    WITH cp AS (SELECT ... FROM ledger WHERE step_id = ... AND the checkpoint is
                what this runner last saw FOR UPDATE),
         bound AS (the key ``limit`` rows after the checkpoint),
         upd AS (UPDATE table SET ... WHERE key > checkpoint AND key <= bound
                 AND (where))
    UPDATE ledger SET progress = new checkpoint, counts, batch time ... RETURNING

The batch and its checkpoint commit together or not at all. The ledger row is
locked for the batch, so two runners alternate batches instead of repeating one,
and a runner whose view of the checkpoint is stale (a lost reply, another runner)
changes nothing and re-reads it. So a killed process or a dropped connection
resumes exactly where the last committed batch ended, and no row is updated twice.

The batch size adapts to a target batch time measured by the server (how long the
batch holds its row locks), so batches stay short for live traffic while the
per-batch round trip stays a small part of the total.

A ``@migrate.backfill`` function gets a :class:`~flask_safe_migrate.core.steps.
BackfillHandle` inside the batch transaction, after the checkpoint is read under
the same row lock; what it returns is written as the next checkpoint before COMMIT.
"""

from __future__ import annotations

import logging
import math
import typing as t
from dataclasses import dataclass

import sqlalchemy as sa

from ..disconnects import ErrorKind
from ..disconnects import classify_error
from ..disconnects import describe_error
from ..disconnects import error_sqlstate
from ..exceptions import StepFailedError
from ..ledger import Ledger
from ..ledger import duration_literal
from ..ledger import literal
from ..ledger import quote_ident
from ..settings import MigrateSettings
from ..steps import Step
from ..steps import quote_name
from ..transaction import close_after_error
from ..transaction import open_autocommit_or_dispose
from ..transaction import release
from ..transaction import send
from ..transaction import send_idempotent
from . import PhaseRunner
from . import StepOutcome

__all__ = ["BackfillPhase", "BackfillProgress", "next_batch_size"]

logger = logging.getLogger(__name__)

_NO_PARAMS = {"no_parameters": True}
_QUERY_CANCELED = "57014"
_INTEGER_TYPES = ("bigint", "integer", "smallint")
#: Batch size bounds, and how much one batch may change the next one's size.
MIN_BATCH = 1
MAX_BATCH = 1_000_000
MAX_GROWTH = 2.0
MAX_SHRINK = 0.25
#: How often progress is logged when nobody renders it.
LOG_EVERY_SECONDS = 5.0


def next_batch_size(size: int, seconds: float, target: float) -> int:
    """The next batch size, aiming at ``target`` seconds per batch.

    Proportional to the measured rate, growing at most 2x and shrinking at most 4x
    per batch, so one odd batch (a lock wait, a cold cache) cannot swing it far.
    """
    if seconds <= 0:
        factor = MAX_GROWTH
    else:
        factor = min(MAX_GROWTH, max(MAX_SHRINK, target / seconds))
    return int(min(MAX_BATCH, max(MIN_BATCH, math.floor(size * factor))))


@dataclass(frozen=True)
class BackfillProgress:
    """Where a backfill is: what the ledger's ``progress`` column holds, and rates.

    ``scanned`` counts keys covered (an estimate within the last batch), ``updated``
    the rows the batches changed; ``estimate`` is the table's row estimate.
    """

    step_id: str
    scanned: int
    updated: int
    batches: int
    batch_size: int
    last_batch_seconds: float
    max_batch_seconds: float
    estimate: int | None
    rate: float  # keys per second in this run
    elapsed_seconds: float
    done: bool = False
    #: Done fraction from the key range (integer keys), better than the estimate.
    key_fraction: float | None = None

    @property
    def fraction(self) -> float | None:
        """Done fraction from the estimate (None when unknown)."""
        if self.done:
            return 1.0
        if self.key_fraction is not None:
            return self.key_fraction
        if not self.estimate:
            return None
        return min(1.0, self.scanned / self.estimate)

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at this run's rate (None when unknown)."""
        if self.done:
            return 0.0
        fraction = self.fraction
        if fraction is None or self.rate <= 0 or self.scanned <= 0:
            return None
        total = self.scanned / fraction if fraction > 0 else self.estimate
        if not total:
            return None
        return max(0.0, (total - self.scanned) / self.rate)

    def describe(self) -> str:
        """``123,456 rows (45%), 12,000 rows/s, ETA 10s``."""
        text = f"{self.scanned:,} rows"
        if self.fraction is not None:
            text += f" ({self.fraction:.0%})"
        text += f", {self.updated:,} updated, {self.rate:,.0f} rows/s"
        if self.eta_seconds is not None and not self.done:
            text += f", ETA {self.eta_seconds:.0f}s"
        return text


class _BatchHandle:
    """The handle of a ``@migrate.backfill`` function: one batch's transaction."""

    def __init__(
        self, step: Step, conn: sa.Connection, after: t.Any, limit: int
    ) -> None:
        self._step = step
        self._conn = conn
        self._after = after
        self._limit = limit
        self.rowcount = 0

    @property
    def step(self) -> Step:
        return self._step

    @property
    def after(self) -> t.Any:
        return self._after

    @property
    def limit(self) -> int:
        return self._limit

    def execute(
        self, sql: str, params: t.Mapping[str, t.Any] | None = None
    ) -> list[tuple[t.Any, ...]]:
        if params is None:
            result = self._conn.exec_driver_sql(sql, execution_options=_NO_PARAMS)
        else:
            result = self._conn.execute(sa.text(sql), dict(params))
        if result.rowcount and result.rowcount > 0:
            self.rowcount += result.rowcount
        return [tuple(r) for r in result.fetchall()] if result.returns_rows else []


@dataclass
class _Run:
    """State of one backfill step in this run."""

    step: Step
    size: int
    started: float
    progress: dict[str, t.Any]
    estimate: int | None = None
    key_type: str = "bigint"
    scanned_at_start: int = 0
    last_log: float = 0.0
    #: The ledger's count of runs that worked on the step (what ``status`` shows).
    attempts: int = 1


class BackfillPhase(PhaseRunner):
    """Apply backfill steps batch by batch, resumable, each batch exactly once."""

    def __init__(
        self,
        settings: MigrateSettings,
        engine: sa.Engine,
        ledger: Ledger,
        *,
        on_progress: t.Callable[[BackfillProgress], None] | None = None,
        **timing: t.Any,
    ) -> None:
        super().__init__(settings, engine, ledger, **timing)
        self.on_progress = on_progress

    @property
    def batch_timeout_seconds(self) -> float:
        """``statement_timeout`` of one batch: the setting, or 10x the target (>= 2s).

        A batch that hits it is rolled back and retried at a quarter of the size.
        """
        if self.settings.statement_timeout_seconds is not None:
            return self.settings.statement_timeout_seconds
        return max(2.0, 10 * self.settings.backfill_batch_seconds)

    # -- one step ----------------------------------------------------------------

    def apply(self, step: Step, *, deadline: float | None = None) -> StepOutcome:
        """Run the step's batches until done, or until ``deadline`` (clock time).

        Stopped by the deadline, the step stays ``running`` with its checkpoint and
        the outcome is ``partial``; the next run resumes it.

        :raises StepFailedError: a batch failed for a reason retrying cannot fix.
        """
        started = self._clock()
        run = self._start(step)
        if run is None:
            return StepOutcome(
                step.id, "backfill", "skipped", detail="applied by another runner"
            )
        failures = 0
        lock_waits = 0.0
        while run.progress.get("state") != "applied":
            if deadline is not None and self._clock() >= deadline:
                self._report(run, force=True)
                logger.info(
                    "step %s: time budget used; stopping at its checkpoint (%s)",
                    step.id,
                    self._progress(run).describe(),
                )
                return StepOutcome(
                    step.id,
                    "backfill",
                    "partial",
                    attempts=run.attempts,
                    duration_seconds=self._clock() - started,
                    detail=self._progress(run).describe(),
                )
            try:
                self._batch(run)
            except Exception as exc:
                kind = classify_error(exc)
                if error_sqlstate(exc) == _QUERY_CANCELED and run.size > MIN_BATCH:
                    run.size = max(MIN_BATCH, run.size // 4)
                    logger.warning(
                        "step %s: a batch ran past statement_timeout (%.1fs); "
                        "retrying with %d rows",
                        step.id,
                        self.batch_timeout_seconds,
                        run.size,
                    )
                    continue
                if kind is ErrorKind.LOCK_NOT_AVAILABLE:
                    pause = self.settings.lock_timeout_seconds
                    lock_waits += self.settings.lock_timeout_seconds + pause
                    if lock_waits > self.settings.lock_retry_max_elapsed_seconds:
                        raise self._failed(step, exc, "rows stayed locked") from exc
                    run.size = max(MIN_BATCH, run.size // 2)
                    logger.warning(
                        "step %s: rows of the batch stayed locked past %.1fs; "
                        "retrying with %d rows in %.1fs",
                        step.id,
                        self.settings.lock_timeout_seconds,
                        run.size,
                        pause,
                    )
                    self._sleep(pause)
                    continue
                if kind in (
                    ErrorKind.DISCONNECT,
                    ErrorKind.CONNECT_FAILED,
                    ErrorKind.CONFLICT,
                ):
                    failures += 1
                    if failures >= self.settings.retry_max_attempts:
                        raise self._failed(
                            step, exc, f"{failures} attempts in a row failed"
                        ) from exc
                    pause = self.backoff(failures)
                    logger.warning(
                        "step %s: batch interrupted (%s); resuming from the "
                        "checkpoint in %.2fs",
                        step.id,
                        describe_error(exc),
                        pause,
                    )
                    self._sleep(pause)
                    before = int(run.progress.get("batches") or 0)
                    self._reread(run)
                    if int(run.progress.get("batches") or 0) > before:
                        failures = 0  # the batch committed (its reply was lost)
                    continue
                raise self._failed(step, exc, "") from exc
            failures = 0
            lock_waits = 0.0
            self._report(run)
            if (
                run.progress.get("state") != "applied"
                and self.settings.backfill_pause_seconds
            ):
                self._sleep(self.settings.backfill_pause_seconds)
        self._report(run, force=True)
        progress = self._progress(run)
        logger.info("step %s: backfill done: %s", step.id, progress.describe())
        return StepOutcome(
            step.id,
            "backfill",
            "applied",
            attempts=run.attempts,
            duration_seconds=self._clock() - started,
            detail=f"{progress.updated:,} rows updated in {progress.batches} batches",
        )

    def _failed(self, step: Step, exc: BaseException, why: str) -> StepFailedError:
        where = f"step {step.id} ({step.location})"
        reason = f" ({why})" if why else ""
        return StepFailedError(
            f"{where}: a batch failed{reason}: {describe_error(exc)}; the step stays "
            "running at its last checkpoint and the next run resumes it",
            step_id=step.id,
            phase="backfill",
        )

    # -- ledger row ------------------------------------------------------------------

    def _start(self, step: Step) -> _Run | None:
        """Create or resume the step's ledger row; None when it is already applied.

        One message: the row (state ``running``), the key's type and the table's
        row estimate.
        """
        q = self.ledger.qualified
        sid = literal(step.id)
        initial = {"scanned": 0, "updated": 0, "batches": 0, "last": None}
        parts = [
            f"INSERT INTO {q} AS l (step_id, phase, checksum, state, attempts, "
            f"progress) VALUES ({sid}, 'backfill', {literal(step.checksum)}, "
            f"'running', 1, {literal(initial)}) ON CONFLICT (step_id) DO UPDATE SET "
            "attempts = l.attempts + 1, checksum = EXCLUDED.checksum "
            "WHERE l.state <> 'applied'"
        ]
        if step.fn is None:
            table = literal(quote_name(step.options["table"]))
            key = literal(step.options["key"])
            parts.append(
                "SELECT l.state, l.progress, l.attempts, "
                f"to_regclass({table}) IS NOT NULL, "
                "(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                f"WHERE a.attrelid = to_regclass({table}) AND a.attname = {key} "
                "AND NOT a.attisdropped), "
                "(SELECT c.reltuples::bigint FROM pg_class c "
                f"WHERE c.oid = to_regclass({table})), "
                "EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                f"WHERE i.indrelid = to_regclass({table}) AND a.attname = {key}) "
                f"FROM {q} l WHERE l.step_id = {sid}"
            )
        else:
            parts.append(
                "SELECT l.state, l.progress, l.attempts, true, NULL, NULL, true "
                f"FROM {q} l "
                f"WHERE l.step_id = {sid}"
            )
        rows = send_idempotent(self.engine, ";\n".join(parts), self.policy())
        state, progress, attempts, table_exists, key_type, estimate, indexed = rows[0]
        if state == "applied":
            logger.info("step %s: already applied by another runner", step.id)
            return None
        where = f"step {step.id} ({step.location})"
        if not table_exists:
            raise StepFailedError(
                f"{where}: table {step.options['table']} does not exist",
                step_id=step.id,
                phase="backfill",
            )
        if step.fn is None and key_type is None:
            raise StepFailedError(
                f"{where}: table {step.options['table']} has no column "
                f"{step.options['key']} (the key=)",
                step_id=step.id,
                phase="backfill",
            )
        if not indexed:
            logger.warning(
                "step %s: no index starts with %s.%s, so every batch scans the "
                "table; backfill on an indexed key (the primary key)",
                step.id,
                step.options["table"],
                step.options["key"],
            )
        progress = dict(progress or initial)
        size = int(progress.get("batch_size") or self.settings.backfill_batch_size)
        run = _Run(
            step=step,
            size=size,
            started=self._clock(),
            progress=progress,
            estimate=max(0, int(estimate)) if estimate is not None else None,
            key_type=str(key_type or "bigint"),
            scanned_at_start=int(progress.get("scanned") or 0),
            attempts=int(attempts),
        )
        if progress.get("batches"):
            logger.info(
                "step %s: resuming after key %s (%s rows done)",
                step.id,
                progress.get("last") if step.fn is None else progress.get("cursor"),
                f"{int(progress.get('scanned') or 0):,}",
            )
        return run

    def _reread(self, run: _Run) -> None:
        rows = send_idempotent(
            self.engine,
            f"SELECT state, progress FROM {self.ledger.qualified} "
            f"WHERE step_id = {literal(run.step.id)}",
            self.policy(),
        )
        state, progress = rows[0]
        run.progress = dict(progress or {})
        run.progress["state"] = state

    # -- batches -------------------------------------------------------------------

    def _batch(self, run: _Run) -> None:
        if run.step.fn is None:
            self._sql_batch(run)
        else:
            self._function_batch(run)

    def _settings_sql(self) -> str:
        return (
            "SET LOCAL lock_timeout = "
            f"{duration_literal(self.settings.lock_timeout_seconds)};\n"
            "SET LOCAL statement_timeout = "
            f"{duration_literal(self.batch_timeout_seconds)}"
        )

    def _sql_batch(self, run: _Run) -> None:
        """One batch as one message: a DO block (so the row count needs no
        RETURNING) then the ledger row. A stale checkpoint makes the block do
        nothing, and the row read after it is the fresh checkpoint."""
        rows = send(self.engine, self.batch_sql(run))
        state, progress = rows[0]
        self._advance(run, state, dict(progress))

    def batch_sql(self, run: _Run) -> str:
        """The message of the next batch of a declarative backfill."""
        step, opts = run.step, run.step.options
        q = self.ledger.qualified
        sid = literal(step.id)
        table = quote_name(opts["table"])
        key = quote_ident(opts["key"])
        last = run.progress.get("last")
        last_text = literal(None if last is None else str(last))
        last_value = f"{last_text}::{run.key_type}"
        where = f" AND ({opts['where']})" if opts.get("where") else ""
        n = run.size
        if run.key_type in _INTEGER_TYPES:
            # Integer keys: the range is the next n key values, found without a
            # scan; sparse keys make light batches, which the sizing then grows.
            low = (
                last_value
                if last is not None
                else f"(SELECT min({key}) - 1 FROM {table})"
            )
            bounds = (
                f"_sm_lo := {low};\n"
                f"SELECT max({key}) INTO _sm_max FROM {table};\n"
                "IF _sm_max IS NOT NULL AND _sm_lo < _sm_max THEN "
                f"_sm_hi := _sm_lo + {n}; END IF;\n"
            )
            in_range = f"{key} > _sm_lo AND {key} <= _sm_hi"
            scanned = "least(_sm_hi, _sm_max) - _sm_lo"
            extent = (
                "'key_max', _sm_max, 'key_min', coalesce(progress->'key_min', "
                "to_jsonb(_sm_lo)), "
            )
        else:
            after = f"{key} > {last_value}" if last is not None else "true"
            bounds = (
                f"_sm_hi := coalesce((SELECT {key} FROM {table} WHERE {after} "
                f"ORDER BY {key} OFFSET {n - 1} LIMIT 1), "
                f"(SELECT max({key}) FROM {table} WHERE {after}));\n"
            )
            in_range = f"{after} AND {key} <= _sm_hi"
            scanned = str(n)
            extent = ""
        body = (
            "#variable_conflict use_column\n"
            f"DECLARE _sm_lo {run.key_type}; _sm_hi {run.key_type}; "
            f"_sm_max {run.key_type}; _sm_n bigint := 0; _sm_s float8;\n"
            "BEGIN\n"
            f"PERFORM 1 FROM {q} WHERE step_id = {sid} AND state = 'running' "
            f"AND (progress->>'last') IS NOT DISTINCT FROM {last_text} FOR UPDATE;\n"
            "IF NOT FOUND THEN RETURN; END IF;\n"
            f"{bounds}"
            "IF _sm_hi IS NOT NULL THEN\n"
            f"UPDATE {table} SET {opts['set']} WHERE {in_range}{where};\n"
            "GET DIAGNOSTICS _sm_n = ROW_COUNT;\n"
            "END IF;\n"
            "_sm_s := extract(epoch FROM clock_timestamp() - statement_timestamp());\n"
            f"UPDATE {q} SET progress = progress || jsonb_build_object("
            "'last', coalesce(_sm_hi::text, progress->>'last'), "
            "'updated', coalesce((progress->>'updated')::bigint, 0) + _sm_n, "
            "'scanned', coalesce((progress->>'scanned')::bigint, 0) + "
            f"coalesce({scanned}, 0), {extent}"
            "'batches', coalesce((progress->>'batches')::bigint, 0) + 1, "
            f"'batch_size', {n}, 'last_batch_seconds', _sm_s, "
            "'max_batch_seconds', greatest(coalesce((progress->>"
            "'max_batch_seconds')::float8, 0), _sm_s)), "
            "state = CASE WHEN _sm_hi IS NULL THEN 'applied' ELSE 'running' END, "
            "applied_at = CASE WHEN _sm_hi IS NULL THEN clock_timestamp() END, "
            "duration_seconds = coalesce(duration_seconds, 0) + _sm_s "
            f"WHERE step_id = {sid};\n"
            "END"
        )
        tag = "$safe_migrate_batch$"
        if tag in body:
            raise StepFailedError(
                f"step {step.id} ({step.location}): its SQL contains {tag}",
                step_id=step.id,
                phase="backfill",
            )
        return (
            f"{self._settings_sql()};\n"
            f"DO {tag}\n{body}\n{tag};\n"
            f"SELECT state, progress FROM {q} WHERE step_id = {sid}"
        )

    def _advance(self, run: _Run, state: str, progress: dict[str, t.Any]) -> None:
        run.progress = progress
        run.progress["state"] = state
        seconds = float(progress.get("last_batch_seconds") or 0.0)
        run.size = next_batch_size(
            run.size, seconds, self.settings.backfill_batch_seconds
        )

    def _function_batch(self, run: _Run) -> None:
        step = run.step
        assert step.fn is not None
        q = self.ledger.qualified
        sid = literal(step.id)
        conn = open_autocommit_or_dispose(self.engine)
        t0 = self._clock()
        try:
            row = conn.exec_driver_sql(
                f"BEGIN;\n{self._settings_sql()};\n"
                f"SELECT state, progress FROM {q} WHERE step_id = {sid} FOR UPDATE",
                execution_options=_NO_PARAMS,
            ).fetchone()
            assert row is not None
            state, progress = str(row[0]), dict(row[1] or {})
            seconds = 0.0
            if state != "applied":
                handle = _BatchHandle(step, conn, progress.get("cursor"), run.size)
                cursor = step.fn(handle)
                seconds = self._clock() - t0
                state = "running" if cursor is not None else "applied"
                progress.update(
                    cursor=cursor,
                    updated=int(progress.get("updated") or 0) + handle.rowcount,
                    scanned=int(progress.get("scanned") or 0) + handle.rowcount,
                    batches=int(progress.get("batches") or 0) + 1,
                    batch_size=run.size,
                    last_batch_seconds=seconds,
                    max_batch_seconds=max(
                        float(progress.get("max_batch_seconds") or 0.0), seconds
                    ),
                )
                conn.exec_driver_sql(
                    self._function_checkpoint_sql(step, state, progress, seconds),
                    execution_options=_NO_PARAMS,
                )
        except Exception as exc:
            close_after_error(conn, self.engine, exc)
            raise
        release(conn)
        run.progress = {**progress, "state": state}
        if seconds:
            run.size = next_batch_size(
                run.size, seconds, self.settings.backfill_batch_seconds
            )

    def _function_checkpoint_sql(
        self, step: Step, state: str, progress: dict[str, t.Any], seconds: float
    ) -> str:
        try:
            value = literal(progress)
        except (TypeError, ValueError) as exc:
            raise StepFailedError(
                f"step {step.id} ({step.location}): the function returned a "
                f"checkpoint that is not JSON: {progress.get('cursor')!r}",
                step_id=step.id,
                phase="backfill",
            ) from exc
        applied_at = "clock_timestamp()" if state == "applied" else "NULL"
        return (
            f"UPDATE {self.ledger.qualified} SET progress = {value}, "
            f"state = {literal(state)}, applied_at = {applied_at}, "
            "duration_seconds = coalesce(duration_seconds, 0) + "
            f"{literal(float(seconds))} WHERE step_id = {literal(step.id)};\nCOMMIT"
        )

    # -- progress ------------------------------------------------------------------

    def _progress(self, run: _Run) -> BackfillProgress:
        p = run.progress
        elapsed = max(1e-9, self._clock() - run.started)
        scanned = int(p.get("scanned") or 0)
        return BackfillProgress(
            step_id=run.step.id,
            scanned=scanned,
            updated=int(p.get("updated") or 0),
            batches=int(p.get("batches") or 0),
            batch_size=run.size,
            last_batch_seconds=float(p.get("last_batch_seconds") or 0.0),
            max_batch_seconds=float(p.get("max_batch_seconds") or 0.0),
            estimate=run.estimate,
            rate=(scanned - run.scanned_at_start) / elapsed,
            elapsed_seconds=elapsed,
            done=p.get("state") == "applied",
            key_fraction=_key_fraction(p),
        )

    def _report(self, run: _Run, *, force: bool = False) -> None:
        progress = self._progress(run)
        if self.on_progress is not None:
            self.on_progress(progress)
            return
        now = self._clock()
        if force or now - run.last_log >= LOG_EVERY_SECONDS:
            run.last_log = now
            logger.info("step %s: %s", run.step.id, progress.describe())


def _key_fraction(progress: t.Mapping[str, t.Any]) -> float | None:
    try:
        low = float(progress["key_min"])
        high = float(progress["key_max"])
        last = float(progress["last"])
    except (KeyError, TypeError, ValueError):
        return None
    if high <= low:
        return None
    return max(0.0, min(1.0, (last - low) / (high - low)))


def progress_fields(progress: t.Mapping[str, t.Any] | None) -> dict[str, t.Any]:
    """The public part of a ledger ``progress`` value (for ``status``)."""
    if not progress:
        return {}
    keep = ("scanned", "updated", "batches", "last", "cursor", "max_batch_seconds")
    return {k: progress[k] for k in keep if k in progress}
