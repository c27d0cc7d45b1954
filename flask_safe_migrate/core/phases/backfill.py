"""The backfill phase: keyset batches, each one short transaction with its checkpoint.

A declarative backfill (``migrate.backfill(id, table=, key=, set=, where=)``) sends
:data:`BATCHES_PER_MESSAGE` batches in **one message** (one round trip for them
all), each batch its own transaction:

    BEGIN; SET LOCAL lock_timeout = ...; SET LOCAL statement_timeout = ...;
    DO $$ lock the step's ledger row if it has recorded the N + i batches this
          runner expects before this one (else do nothing), and read its
          checkpoint; take the next n keys after it (an index scan; where a
          unique integer key is dense, the next n key values instead); UPDATE
          table SET ... WHERE key > checkpoint AND key <= the last of them AND
          (where); UPDATE ledger SET progress = that last key, one batch more,
          the keys counted, the rows updated, the batch time (and the step is
          applied when no key is left after it) $$;
    COMMIT;
    ... the same for i + 1, i + 2, ...
    SELECT state, progress FROM ledger WHERE step_id = ...

Each batch and its checkpoint commit together or not at all, and release their row
locks at once (the live app waits for one batch at most, as with one batch per
message). The ledger row is locked for the batch, so two runners alternate batches
instead of repeating one; a batch whose expected count is stale (a lost reply,
another runner, an error that cut the message after some batches committed)
changes nothing, and the row read at the end is the fresh checkpoint. So a killed
process or a dropped connection resumes exactly where the last committed batch
ended, and no row is updated twice. A failing batch stops the rest of the message
(PostgreSQL skips it); the batches before it stay committed.

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
from ..disconnects import error_sqlstate
from ..exceptions import StepFailedError
from ..ledger import Ledger
from ..ledger import duration_literal
from ..ledger import literal
from ..ledger import quote_ident
from ..settings import MigrateSettings
from ..steps import Step
from ..steps import quote_name
from ..transaction import execute_on
from ..transaction import send
from . import LiveHandle
from . import PhaseRunner
from . import StepOutcome
from . import autocommit
from . import connection_executor
from . import describe_step
from . import is_transient
from . import translate_db_errors

__all__ = ["BackfillPhase", "BackfillProgress", "next_batch_size"]

logger = logging.getLogger(__name__)

_QUERY_CANCELED = "57014"
_INTEGER_TYPES = ("bigint", "integer", "smallint")
#: Batch size bounds, and how much one batch may change the next one's size.
MIN_BATCH = 1
MAX_BATCH = 1_000_000
MAX_GROWTH = 2.0
MAX_SHRINK = 0.25
#: How often progress is logged when nobody renders it.
LOG_EVERY_SECONDS = 5.0
#: Batches of a declarative backfill sent in one message at most: the round trip is
#: paid once for them (at the 0.2 s target and 10 ms of round trip, 0.6% of the
#: time instead of 5%). Under a time budget a message holds only the batches that
#: fit in what is left of it (at the target batch time), at least one.
BATCHES_PER_MESSAGE = 8
#: A batch skips the index walk when the batch before it had at most this many
#: key values per key (see BackfillPhase._range_sql).
DENSE_SPREAD = 2.0


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

    ``scanned`` counts the keys the batches covered (keys that exist, each counted
    once: never negative, never decreasing), ``updated`` the rows the batches
    changed; ``estimate`` is the table's row estimate.
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


@dataclass
class _Run:
    """State of one backfill step in this run."""

    step: Step
    size: int
    started: float
    progress: dict[str, t.Any]
    estimate: int | None = None
    key_type: str = "bigint"
    #: The key has a unique index of its own (so one row per key value at most).
    unique_key: bool = False
    scanned_at_start: int = 0
    #: The ledger's count of runs that worked on the step (what ``status`` shows).
    attempts: int = 1
    last_log: float = 0.0
    #: Seconds this batch has waited for locked rows (the lock-retry budget).
    lock_waits: float = 0.0
    #: When the run's time budget ends (clock time), if it has one.
    deadline: float | None = None
    #: The next batch finds its keys with the index (after a batch was too big).
    walk: bool = False

    @property
    def done(self) -> bool:
        """Whether the ledger says the step is applied."""
        return self.progress.get("state") == "applied"


def _batch_hint(exc: BaseException) -> str:
    locked = classify_error(exc) is ErrorKind.LOCK_NOT_AVAILABLE
    return (
        "; rows of the batch stayed locked past "
        "SAFE_MIGRATE_LOCK_RETRY_MAX_ELAPSED_SECONDS"
        if locked
        else ""
    ) + "; the step stays running at its last checkpoint and the next run resumes it"


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
        run.deadline = deadline
        with translate_db_errors(step, doing="in a batch", hint=_batch_hint):
            while not run.done:
                if deadline is not None and self._clock() >= deadline:
                    return self._stopped(run, started)
                self._next_batch(run)
                self._report(run)
                if not run.done and self.settings.backfill_pause_seconds:
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

    def _stopped(self, run: _Run, started: float) -> StepOutcome:
        """The time budget is used: stop at the checkpoint (``partial``)."""
        self._report(run, force=True)
        where = self._progress(run).describe()
        logger.info(
            "step %s: time budget used; stopping at its checkpoint (%s)",
            run.step.id,
            where,
        )
        return StepOutcome(
            run.step.id,
            "backfill",
            "partial",
            attempts=run.attempts,
            duration_seconds=self._clock() - started,
            detail=where,
        )

    def _next_batch(self, run: _Run) -> None:
        """Run one batch, whatever it takes (a small state machine):

        - it ran: the lock-wait budget starts again;
        - interrupted (a dropped connection, a conflict): again on the shared retry
          policy; the batch re-reads its checkpoint under the row lock, so one
          that committed although its reply was lost is not run twice;
        - past ``statement_timeout``: again at once with a quarter of the rows;
        - its rows stayed locked past ``lock_timeout``: again with half the rows
          after a pause as long, while the lock-retry budget lasts;
        - anything else: raised.
        """
        policy = self.policy(retry=is_transient, max_elapsed=False)
        while True:
            try:
                policy.call(self._batch, run)
            except Exception as exc:
                if not self._shrink(run, exc):
                    raise
                continue
            run.lock_waits = 0.0
            run.walk = False
            return

    def _shrink(self, run: _Run, exc: Exception) -> bool:
        """Shrink the batch after a timeout or locked rows; False: give up."""
        run.walk = True  # the key spread misled the batch, or may now
        if error_sqlstate(exc) == _QUERY_CANCELED and run.size > MIN_BATCH:
            run.size = max(MIN_BATCH, run.size // 4)
            logger.warning(
                "step %s: a batch ran past statement_timeout (%.1fs); "
                "retrying with %d rows",
                run.step.id,
                self.batch_timeout_seconds,
                run.size,
            )
            return True
        if classify_error(exc) is not ErrorKind.LOCK_NOT_AVAILABLE:
            return False
        pause = self.settings.lock_timeout_seconds
        run.lock_waits += self.settings.lock_timeout_seconds + pause
        if run.lock_waits > self.settings.lock_retry_max_elapsed_seconds:
            return False
        run.size = max(MIN_BATCH, run.size // 2)
        logger.warning(
            "step %s: rows of the batch stayed locked past %.1fs; "
            "retrying with %d rows in %.1fs",
            run.step.id,
            self.settings.lock_timeout_seconds,
            run.size,
            pause,
        )
        self._sleep(pause)
        return True

    # -- ledger row ------------------------------------------------------------------

    def _start(self, step: Step) -> _Run | None:
        """Create or resume the step's ledger row; None when it is already applied.

        One message: the row (state ``running``), the key's type and the table's
        row estimate.
        """
        initial = {"scanned": 0, "updated": 0, "batches": 0, "last": None}
        start = self.ledger.start_sql(
            step.id,
            phase="backfill",
            checksum=step.checksum,
            progress=initial,
            text_checksum=step.text_checksum,
        )
        columns = ["true", "NULL", "NULL", "true", "false"]
        if step.fn is None:
            columns = _table_facts(step.options["table"], step.options["key"])
        read = self.ledger.progress_sql(step.id, columns=["attempts", *columns])
        rows = self.query(f"{start};\n{read}")
        state, progress, attempts, table_exists, key_type, estimate, indexed, unique = (
            rows[0]
        )
        if state == "applied":
            logger.info("step %s: already applied by another runner", step.id)
            return None
        self._check_table(step, table_exists, key_type, indexed)
        progress = dict(progress or initial)
        run = _Run(
            step=step,
            size=int(progress.get("batch_size") or self.settings.backfill_batch_size),
            started=self._clock(),
            progress=progress,
            estimate=max(0, int(estimate)) if estimate is not None else None,
            key_type=str(key_type or "bigint"),
            unique_key=bool(unique),
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

    def _check_table(
        self, step: Step, table_exists: bool, key_type: str | None, indexed: bool
    ) -> None:
        """Refuse a missing table or key column; warn of an unindexed key."""
        if not table_exists:
            raise StepFailedError(
                f"{describe_step(step)}: table {step.options['table']} does not exist",
                step_id=step.id,
                phase="backfill",
            )
        if step.fn is None and key_type is None:
            raise StepFailedError(
                f"{describe_step(step)}: table {step.options['table']} has no column "
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
        """:data:`BATCHES_PER_MESSAGE` batches as one message, each a transaction
        with a DO block (so the row count needs no RETURNING), then the ledger
        row. A stale expected count makes a block do nothing, and the row read
        at the end is the fresh checkpoint."""
        rows = send(self.engine, self.batch_sql(run, self._batches_now(run)))
        state, progress = rows[0]
        self._advance(run, dict(progress, state=state), None)

    def _batches_now(self, run: _Run) -> int:
        """How many batches the next message holds: all it may, or under a time
        budget those that fit in what is left of it (at least one)."""
        if run.deadline is None:
            return BATCHES_PER_MESSAGE
        left = run.deadline - self._clock()
        fit = int(left / self.settings.backfill_batch_seconds)
        return max(1, min(BATCHES_PER_MESSAGE, fit))

    def batch_sql(self, run: _Run, batches: int = BATCHES_PER_MESSAGE) -> str:
        """The message of the next ``batches`` batches of a declarative backfill.

        A batch is the next ``n`` keys after the checkpoint (an index scan of n
        entries): its last key is the new checkpoint, which so never passes the
        table's max key, and the keys counted are keys that exist. Each batch
        runs only if the ledger has recorded the batches expected before it.
        """
        done = int(run.progress.get("batches") or 0)
        tag = "$safe_migrate_batch$"
        blocks = []
        for i in range(batches):
            body = self._batch_block(run, done + i)
            if tag in body:
                raise StepFailedError(
                    f"{describe_step(run.step)}: its SQL contains {tag}",
                    step_id=run.step.id,
                    phase="backfill",
                )
            blocks.append(
                f"BEGIN;\n{self._settings_sql()};\nDO {tag}\n{body}\n{tag};\nCOMMIT"
            )
        read = self.ledger.progress_sql(run.step.id)
        return ";\n".join([*blocks, read])

    def _batch_block(self, run: _Run, expected: int) -> str:
        """The DO block of the batch that comes after ``expected`` batches."""
        step = run.step
        first = expected == int(run.progress.get("batches") or 0)
        advance = self.ledger.advance_checkpoint_sql(
            step.id,
            last="_sm_hi",
            keys="_sm_c",
            rows="_sm_n",
            seconds="_sm_s",
            batch_size="_sm_size",
            extra=self._key_range(run, f"_sm_last::{run.key_type}"),
            done="_sm_done",
        )
        lock = self.ledger.lock_checkpoint_sql(
            step.id,
            batches=expected,
            into="_sm_last, _sm_size, _sm_prev_s, _sm_spread",
        )
        # The first batch of the message takes the size the runner chose (it may
        # have shrunk it after a timeout); the next ones size themselves from the
        # batch before, as next_batch_size does.
        size = (
            str(run.size)
            if first
            else _next_size_sql("_sm_size", "_sm_prev_s", self.settings)
        )
        forget = "_sm_spread := NULL;\n" if first and run.walk else ""
        return (
            "#variable_conflict use_column\n"
            f"DECLARE _sm_first {run.key_type}; _sm_hi {run.key_type}; "
            "_sm_last text; _sm_size bigint; _sm_prev_s float8; _sm_spread float8; "
            "_sm_c bigint := 0; _sm_n bigint := 0; _sm_s float8; "
            f"_sm_max {run.key_type}; _sm_done boolean; "
            "_sm_t0 timestamptz := clock_timestamp();\n"
            "BEGIN\n"
            f"{lock};\n"
            "IF NOT FOUND THEN RETURN; END IF;\n"
            f"_sm_size := {size};\n{forget}"
            f"{self._range_sql(run)}\n"
            "_sm_s := extract(epoch FROM clock_timestamp() - _sm_t0);\n"
            f"{advance};\nEND"
        )

    def _range_sql(self, run: _Run) -> str:
        """PL/pgSQL: find the batch's keys, after ``_sm_last`` up to ``_sm_hi``
        (NULL: none left), update their rows, count keys and rows, and say in
        ``_sm_done`` whether no key is left after them (the step is applied).

        The keys are the next ``_sm_size`` keys after the checkpoint, found with
        the index (a walk of that many index entries: about 6% of the time of
        updating their rows). A unique integer key without ``where=`` skips the
        walk where the keys are dense, that is when the batch before had at most
        :data:`DENSE_SPREAD` key values per key: the batch is then the next
        ``_sm_size`` key values (capped at the table's max key), so it holds at
        most ``_sm_size`` rows, one per value, and its keys are the rows the
        UPDATE counts. A resumed run, a sparse stretch, and the batch after one
        that ran too long walk.
        """
        opts = run.step.options
        table, key = quote_name(opts["table"]), quote_ident(opts["key"])
        last = f"_sm_last::{run.key_type}"
        after = f"(_sm_last IS NULL OR {key} > {last})"
        where = f" AND ({opts['where']})" if opts.get("where") else ""
        walk = (
            "SELECT min(_sm_k), max(_sm_k), count(*) INTO _sm_first, _sm_hi, _sm_c "
            f"FROM (SELECT {key} AS _sm_k FROM {table} WHERE {after} "
            f"ORDER BY {key} LIMIT _sm_size) AS _sm_b;\n"
        )
        update = (
            f"UPDATE {table} SET {opts['set']} WHERE {after} AND {key} <= _sm_hi"
            f"{where};\nGET DIAGNOSTICS _sm_n = ROW_COUNT;\n"
        )
        walked = "_sm_done := _sm_hi IS NULL OR _sm_c < _sm_size;\n"
        walked_batch = f"{walk}{walked}IF _sm_hi IS NOT NULL THEN\n{update}END IF;"
        if run.key_type not in _INTEGER_TYPES:
            return walked_batch
        # The max key: the cap of a range of values, and the progress's key_max.
        top = f"_sm_max := (SELECT max({key}) FROM {table});\n"
        if where or not run.unique_key:
            return f"{top}{walked_batch}"
        span = (
            f"IF _sm_max IS NULL OR _sm_max <= {last} THEN _sm_hi := NULL; "
            f"ELSE _sm_hi := least(_sm_max, {last}::numeric + _sm_size); END IF;\n"
            "_sm_done := _sm_hi IS NULL OR _sm_hi >= _sm_max;\n"
        )
        spread = (
            f"(_sm_hi::numeric - coalesce({last}::numeric, _sm_first::numeric - 1)) "
            "/ nullif(_sm_c, 0)"
        )
        return (
            f"{top}IF _sm_last IS NULL OR coalesce(_sm_spread > "
            f"{DENSE_SPREAD}, true) THEN\n{walk}{walked}"
            f"ELSE\n{span}END IF;\n"
            f"IF _sm_hi IS NOT NULL THEN\n{update}_sm_c := _sm_n;\n"
            f"_sm_spread := {spread};\nELSE _sm_spread := NULL; END IF;"
        )

    def _key_range(self, run: _Run, last: str) -> dict[str, str]:
        """Integer keys also record the key range (the max read by the batch's
        :meth:`_range_sql`), for the done fraction, and the key spread."""
        if run.key_type not in _INTEGER_TYPES:
            return {}
        return {
            "spread": "_sm_spread",
            "key_max": "_sm_max",
            "key_min": "coalesce(progress->'key_min', "
            f"to_jsonb(coalesce({last}, _sm_first - 1)))",
        }

    def _advance(
        self, run: _Run, progress: dict[str, t.Any], seconds: float | None
    ) -> None:
        """Take the ledger's word for where the step is; size the next batch by
        the time this one took (the server's measure when ``seconds`` is None)."""
        run.progress = progress
        if seconds is None:
            # The last batch of the message sized itself on the server: go on from
            # its size, not from the first batch's.
            seconds = float(progress.get("last_batch_seconds") or 0.0)
            run.size = int(progress.get("batch_size") or run.size)
        elif not seconds:
            return  # nothing ran: keep the size
        run.size = next_batch_size(
            run.size, seconds, self.settings.backfill_batch_seconds
        )

    def _function_batch(self, run: _Run) -> None:
        """One batch of a ``@migrate.backfill`` function in one transaction, its
        checkpoint read under the row lock and written before COMMIT."""
        step = run.step
        assert step.fn is not None
        with autocommit(self.engine) as conn:
            t0 = self._clock()  # after connecting: the batch's own time
            read = self.ledger.progress_sql(step.id, lock=True)
            rows, _ = execute_on(conn, f"BEGIN;\n{self._settings_sql()};\n{read}")
            state, progress = str(rows[0][0]), dict(rows[0][1] or {})
            seconds = 0.0
            if state != "applied":
                handle = LiveHandle(
                    step,
                    connection_executor(conn),
                    after=progress.get("cursor"),
                    limit=run.size,
                    connection=conn,
                )
                cursor = step.fn(handle)
                seconds = self._clock() - t0
                state = "running" if cursor is not None else "applied"
                _count_batch(progress, cursor, handle.rowcount, run.size, seconds)
                execute_on(conn, self._checkpoint_sql(step, state, progress, seconds))
        self._advance(run, dict(progress, state=state), seconds)

    def _checkpoint_sql(
        self, step: Step, state: str, progress: dict[str, t.Any], seconds: float
    ) -> str:
        try:
            sql = self.ledger.checkpoint_sql(
                step.id, state=state, progress=progress, seconds=seconds
            )
        except (TypeError, ValueError) as exc:
            raise StepFailedError(
                f"{describe_step(step)}: the function returned a checkpoint that is "
                f"not JSON: {progress.get('cursor')!r}",
                step_id=step.id,
                phase="backfill",
            ) from exc
        return f"{sql};\nCOMMIT"

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


def _next_size_sql(size: str, seconds: str, settings: MigrateSettings) -> str:
    """:func:`next_batch_size` as a SQL expression of the last size and seconds."""
    target = float(settings.backfill_batch_seconds)
    factor = (
        f"CASE WHEN coalesce({seconds}, 0) <= 0 THEN {MAX_GROWTH} ELSE "
        f"least({MAX_GROWTH}, greatest({MAX_SHRINK}, {target!r} / {seconds})) END"
    )
    return (
        f"greatest({MIN_BATCH}, least({MAX_BATCH}, "
        f"floor(coalesce({size}, {settings.backfill_batch_size}) * ({factor}))))"
        "::bigint"
    )


def _table_facts(table: str, key: str) -> list[str]:
    """Columns that read, with the ledger row, whether ``table`` exists, the type
    of ``key``, the row estimate, whether an index starts with ``key``, and
    whether a unique index (not partial) is on ``key`` alone."""
    regclass = f"to_regclass({literal(quote_name(table))})"
    name = literal(key)
    # The table's indexes whose first column is ``key``.
    indexes = (
        "SELECT 1 FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        f"WHERE i.indrelid = {regclass} AND a.attname = {name}"
    )
    return [
        f"{regclass} IS NOT NULL",
        "(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        f"WHERE a.attrelid = {regclass} AND a.attname = {name} "
        "AND NOT a.attisdropped)",
        f"(SELECT c.reltuples::bigint FROM pg_class c WHERE c.oid = {regclass})",
        f"EXISTS ({indexes})",
        f"EXISTS ({indexes} AND i.indisunique AND i.indnkeyatts = 1 "
        "AND i.indpred IS NULL)",
    ]


def _count_batch(
    progress: dict[str, t.Any], cursor: t.Any, rows: int, size: int, seconds: float
) -> None:
    """Add one function batch to ``progress``: its cursor, rows and time."""
    progress.update(
        cursor=cursor,
        updated=int(progress.get("updated") or 0) + rows,
        scanned=int(progress.get("scanned") or 0) + rows,
        batches=int(progress.get("batches") or 0) + 1,
        batch_size=size,
        last_batch_seconds=seconds,
        max_batch_seconds=max(float(progress.get("max_batch_seconds") or 0.0), seconds),
    )


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
