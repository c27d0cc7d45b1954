"""The index phase: concurrent builds that repair themselves, claimed by a lease.

``CREATE INDEX CONCURRENTLY`` cannot run in a transaction, so an index step is not
one atomic unit like a schema step. It is made exactly-once by checking the catalog
before and after the build:

1. claim the step's ledger row (a lease: owner and expiry, renewed every third of
   it by a thread while building), so two migrators never build the same index;
   a migrator that finds the lease held waits for it to be released or to expire;
2. read the index's state in the catalog: missing, valid, INVALID (left by an
   interrupted build), or being built (``pg_stat_progress_create_index``);
3. missing: de-duplicate first when asked (batches of DELETE), then build;
   INVALID and not being built: ``DROP INDEX CONCURRENTLY`` and build again;
   being built by another session: wait for it; valid: done;
4. once ``indisvalid`` is true, mark the step applied and release the lease.

A dropped connection during the build is retried from step 2: the build may still
be running on the server (it is then waited for), or it died and left an INVALID
index (dropped and rebuilt). The build's own transactions are PostgreSQL's.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import typing as t
import uuid
from dataclasses import dataclass
from dataclasses import field

import pglast
import pglast.ast
import pglast.enums
import sqlalchemy as sa

from ..disconnects import describe_error
from ..disconnects import error_sqlstate
from ..exceptions import RetryExhaustedError
from ..exceptions import StepFailedError
from ..exceptions import StepRefusedError
from ..ledger import Ledger
from ..ledger import literal
from ..ledger import quote_ident
from ..retry import RetryIf
from ..retry import RetryPolicy
from ..retry import RetryState
from ..settings import MigrateSettings
from ..sql import SqlSyntaxError
from ..sql import Statement
from ..sql import StatementKind
from ..sql import split_statements
from ..steps import Step
from ..steps import index_element
from ..steps import quote_name
from ..transaction import execute_on
from ..transaction import send
from . import Executor
from . import LiveHandle
from . import PhaseRunner
from . import Rows
from . import StepOutcome
from . import autocommit
from . import describe_step
from . import is_transient
from . import translate_db_errors

__all__ = ["IndexPhase", "IndexTarget", "dedup_sql", "migrator_id"]

logger = logging.getLogger(__name__)

_UNIQUE_VIOLATION = "23505"
_QUERY_CANCELED = "57014"
#: How often a migrator polls a build or a lease held by someone else.
POLL_SECONDS = 1.0
#: Rounds of dedup + build when new duplicates keep arriving during the build.
DEDUP_ROUNDS = 3
#: Statements an index step may run besides its builds.
_INDEX_NODES = {
    "IndexStmt",
    "DropStmt",
    "ReindexStmt",
    "VacuumStmt",  # ANALYZE
    "AlterTableStmt",  # ALTER INDEX ... (RENAME, SET (...))
    "RenameStmt",
    "CommentStmt",
}


def migrator_id() -> str:
    """A lease owner id: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class IndexTarget:
    """One index to build: its name, table, statement and de-duplication."""

    name: str
    table: str
    sql: str
    unique: bool = False
    where: str | None = None
    elements: tuple[str, ...] = ()
    dedup_keep: tuple[str, str] | None = None  # (min|max, column)

    @property
    def qualified_table(self) -> str:
        return quote_name(self.table)

    @classmethod
    def from_options(cls, options: t.Mapping[str, t.Any], sql: str) -> IndexTarget:
        """The target of a declarative ``migrate.index(...)`` step."""
        keep = None
        if options.get("dedup_keep"):
            fn, _, rest = str(options["dedup_keep"]).partition("(")
            keep = (fn.strip().lower(), rest.rstrip(") ").strip())
        columns = [str(c).strip() for c in options["columns"]]
        return cls(
            name=str(options["name"]),
            table=str(options["table"]),
            sql=sql,
            unique=bool(options["unique"]),
            where=options.get("where"),
            elements=tuple(index_element(c) for c in columns),
            dedup_keep=keep,
        )


class _Situation(enum.Enum):
    """What the catalog says of an index, and so what :meth:`ensure_index` does."""

    NO_TABLE = "no table"  # fail
    NOT_AN_INDEX = "not an index"  # fail: the name is taken
    VALID = "valid"  # done
    BUILDING = "building"  # another session builds it: wait, read again
    INVALID = "invalid"  # an interrupted build: drop it, read again
    MISSING = "missing"  # de-duplicate, build, read again


@dataclass(frozen=True)
class _IndexState:
    table_exists: bool
    relkind: str | None  # None: no relation of that name in the table's schema
    valid: bool
    same_table: bool
    building: bool
    statement_timeout: str

    @property
    def situation(self) -> _Situation:
        if not self.table_exists:
            return _Situation.NO_TABLE
        if self.relkind is None:
            return _Situation.MISSING
        if self.relkind not in ("i", "I") or not self.same_table:
            return _Situation.NOT_AN_INDEX
        if self.valid:
            return _Situation.VALID
        return _Situation.BUILDING if self.building else _Situation.INVALID


@dataclass
class _Build:
    """One :meth:`IndexPhase.ensure_index`: its target and what it did so far."""

    step: Step
    target: IndexTarget
    done: list[str] = field(default_factory=list)
    drops: int = 0
    dedup_rounds: int = 0
    deduped: bool = False
    waited_logged: bool = False
    statement_timeout: str = "0"

    def hint(self, exc: BaseException) -> str:
        """What to do about a failed build (duplicates, a server timeout)."""
        return _build_hint(error_sqlstate(exc), self.target, self.statement_timeout)

    def redo_dedup(self, exc: BaseException) -> bool:
        """After duplicates arrived during the build: de-duplicate again, if allowed."""
        if (
            error_sqlstate(exc) != _UNIQUE_VIOLATION
            or self.target.dedup_keep is None
            or self.dedup_rounds >= DEDUP_ROUNDS
        ):
            return False
        self.dedup_rounds += 1
        self.deduped = False
        return True


class _LeaseHeldError(Exception):
    """Another migrator holds the step's build lease (retried: waited for)."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"{holder} holds the build lease")
        self.holder = holder


class _Lease:
    """The step's lease, renewed by a daemon thread until stopped."""

    def __init__(self, phase: IndexPhase, step: Step, interval: float) -> None:
        self._phase = phase
        self._step = step
        self._interval = interval
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(
            target=self._run, name=f"safe-migrate-lease-{step.id}", daemon=True
        )

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                renewed = self._phase.renew_lease(self._step)
            except Exception as exc:
                logger.warning(
                    "step %s: renewing the build lease failed (%s); trying again "
                    "in %.0fs",
                    self._step.id,
                    describe_error(exc),
                    self._interval,
                )
                continue
            if not renewed and not self.lost:
                self.lost = True
                logger.warning(
                    "step %s: the build lease was taken over by another migrator",
                    self._step.id,
                )


def _refused(where: str, step: Step, message: str) -> StepRefusedError:
    return StepRefusedError(f"{where}: {message}", step_id=step.id, phase="index")


def _one_statement(where: str, step: Step, sql: str) -> Statement:
    """The one index statement of an ``execute()`` (anything else is refused)."""
    try:
        statements = split_statements(sql)
    except SqlSyntaxError as exc:
        raise _refused(where, step, f"invalid SQL: {exc.message}") from exc
    if len(statements) != 1:
        raise _refused(
            where,
            step,
            "send one statement per execute() in an index step (a concurrent build "
            "cannot share a message with anything)",
        )
    stmt = statements[0]
    if stmt.kind in (StatementKind.TRANSACTION_CONTROL, StatementKind.SESSION_SETTING):
        raise _refused(
            where, step, f"{stmt.kind.value} is not allowed in a step: {stmt.sql}"
        )
    if stmt.node_type not in _INDEX_NODES:
        raise _refused(
            where,
            step,
            "an index step runs index statements only (CREATE/DROP INDEX "
            f"CONCURRENTLY, REINDEX, ANALYZE), not {stmt.node_type}: {stmt.sql}",
        )
    return stmt


def _custom_target(where: str, step: Step, sql: str) -> IndexTarget | None:
    """The build of a custom index statement, or None for another index statement.

    :param where: how refusals name the step.
    """
    stmt = _one_statement(where, step, sql)
    node = pglast.parse_sql(stmt.sql)[0].stmt
    if isinstance(node, pglast.ast.AlterTableStmt) and node.objtype != (
        pglast.enums.ObjectType.OBJECT_INDEX
    ):
        raise _refused(
            where,
            step,
            "an index step runs index statements only; ALTER TABLE belongs in a "
            f"schema step: {stmt.sql}",
        )
    if not isinstance(node, pglast.ast.IndexStmt):
        return None
    if not node.concurrent:
        raise _refused(
            where,
            step,
            "CREATE INDEX without CONCURRENTLY blocks writes to the table for the "
            f"whole build; add CONCURRENTLY: {stmt.sql}",
        )
    if not node.idxname:
        raise _refused(
            where,
            step,
            "name the index, so an interrupted build can be found and repaired: "
            f"{stmt.sql}",
        )
    relation = node.relation
    assert relation is not None
    assert relation.relname
    table = str(relation.relname)
    if relation.schemaname:
        table = f"{relation.schemaname}.{table}"
    return IndexTarget(
        name=node.idxname, table=table, sql=stmt.sql, unique=bool(node.unique)
    )


class IndexPhase(PhaseRunner):
    """Apply index steps: one concurrent build each, claimed by a lease."""

    def __init__(
        self,
        settings: MigrateSettings,
        engine: sa.Engine,
        ledger: Ledger,
        *,
        owner: str | None = None,
        **timing: t.Any,
    ) -> None:
        super().__init__(settings, engine, ledger, **timing)
        self.owner = owner or migrator_id()

    # -- one step ------------------------------------------------------------------

    def apply(self, step: Step, *, deadline: float | None = None) -> StepOutcome:
        """Build the step's index (or run its function) unless the ledger has it.

        :raises StepRefusedError: the step's SQL is not allowed in an index step.
        :raises StepFailedError: the build failed (duplicates, timeout, ...); an
            INVALID index it left is dropped first.
        """
        started = self._clock()
        holder = self._claim_or_wait(step, deadline)
        if holder == "applied":
            logger.info("step %s: already applied by another runner", step.id)
            return StepOutcome(
                step.id, "index", "skipped", detail="applied by another runner"
            )
        if holder is not None:
            return StepOutcome(
                step.id, "index", "partial", detail=f"waiting for {holder}"
            )
        try:
            with _Lease(self, step, self.settings.index_lease_seconds / 3):
                detail = self._build_step(step)
            seconds = self._clock() - started
            self.query(self.ledger.finish_sql(step.id, seconds=seconds))
        except BaseException:
            self._release_lease(step)
            raise
        logger.info("step %s: index valid, applied", step.id)
        return StepOutcome(
            step.id,
            "index",
            "applied",
            attempts=1,
            duration_seconds=self._clock() - started,
            detail=detail,
        )

    def _build_step(self, step: Step) -> str:
        if step.fn is None:
            assert step.sql is not None
            target = IndexTarget.from_options(step.options, step.sql)
            return self.ensure_index(step, target)
        built: list[str] = []
        handle = LiveHandle(step, self._executor(step, built))
        with translate_db_errors(step, hint=_last_statement(handle)):
            step.fn(handle)
        return f"built {', '.join(built)}" if built else ""

    def _executor(self, step: Step, built: list[str]) -> Executor:
        """Builds go through :meth:`ensure_index`; other index statements are
        sent outside a transaction."""

        def execute(sql: str, params: t.Mapping[str, t.Any] | None) -> tuple[Rows, int]:
            if params:
                raise _refused(
                    describe_step(step),
                    step,
                    "index statements take no parameters; put the values in the SQL",
                )
            target = _custom_target(describe_step(step), step, sql)
            if target is None:
                return self.query(sql), 0
            self.ensure_index(step, target)
            built.append(target.name)
            return [], 0

        return execute

    # -- the lease -----------------------------------------------------------------

    def _claim_or_wait(self, step: Step, deadline: float | None) -> str | None:
        """Claim the lease, waiting for another holder (polled on the shared
        policy); None once claimed, ``applied``, or the holder at ``deadline``."""

        def log_wait(state: RetryState) -> None:
            if state.attempt % 30 == 1:
                logger.info("step %s: %s; waiting", step.id, state.exception)

        policy = RetryPolicy(
            stop=lambda _: deadline is not None and self._clock() >= deadline,
            wait=lambda _: POLL_SECONDS,
            retry=RetryIf(lambda exc: isinstance(exc, _LeaseHeldError)),
            before_sleep=log_wait,
            sleep=self._sleep,
            clock=self._clock,
        )
        try:
            claim, _ = policy.call(self._claim, step)
        except RetryExhaustedError as exc:
            if not isinstance(exc.last_exception, _LeaseHeldError):
                raise  # the ledger stayed unreachable (the query's own retries)
            return exc.last_exception.holder
        return claim

    def _claim(self, step: Step) -> str | None:
        """None when claimed, ``applied``; raises while someone else holds it."""
        sql = self.ledger.claim_lease_sql(
            step.id,
            phase="index",
            checksum=step.checksum,
            owner=self.owner,
            seconds=self.settings.index_lease_seconds,
        )
        claimed, state, owner, remaining = self.query(sql)[0]
        if claimed:
            return None
        if state == "applied":
            return "applied"
        raise _LeaseHeldError(
            f"{owner} (lease expires in {float(remaining or 0):.0f}s)"
        )

    def renew_lease(self, step: Step) -> bool:
        """Extend the lease; False when another migrator has taken it over."""
        sql = self.ledger.renew_lease_sql(
            step.id, owner=self.owner, seconds=self.settings.index_lease_seconds
        )
        # The renewer's own connection, not the pool's retry: it must not dispose
        # the engine under the build, and it tries again at the next tick.
        with autocommit(self.engine, dispose=False) as conn:
            rows, _ = execute_on(conn, sql)
        return bool(rows)

    def _release_lease(self, step: Step) -> None:
        try:
            self.query(self.ledger.release_lease_sql(step.id, owner=self.owner))
        except Exception:
            logger.debug("releasing the lease of %s failed", step.id, exc_info=True)

    # -- the build -----------------------------------------------------------------

    def ensure_index(self, step: Step, target: IndexTarget) -> str:
        """Make ``target`` exist and be valid: repair, de-duplicate, build, confirm.

        A state machine over what the catalog says (:class:`_Situation`): no table
        or a name taken by something else fails; valid is done; being built by
        another session is waited for; INVALID is dropped; missing is
        de-duplicated and built; then the catalog is read again. A build that a
        dropped connection interrupted is retried on the shared policy, starting
        from reading the catalog (the build may still run on the server).

        :returns: what was done, for the run report.
        :raises StepFailedError: the build failed for a reason retrying cannot fix.
        """
        build = _Build(step, target)
        with translate_db_errors(
            step, doing=f"in the build of {target.name}", hint=build.hint
        ):
            policy = self.policy(retry=is_transient, max_elapsed=False)
            summary, _ = policy.call(self._converge, build)
        return summary

    def _converge(self, build: _Build) -> str:
        transitions: dict[_Situation, t.Callable[[_Build, _IndexState], None]] = {
            _Situation.NO_TABLE: self._no_table,
            _Situation.NOT_AN_INDEX: self._name_taken,
            _Situation.BUILDING: self._wait_for_build,
            _Situation.INVALID: self._drop_invalid,
            _Situation.MISSING: self._dedup_and_build,
        }
        while True:
            state = self._state(build.target)
            build.statement_timeout = state.statement_timeout
            if state.situation is _Situation.VALID:
                return "; ".join(build.done) or "index already valid"
            transitions[state.situation](build, state)

    def _no_table(self, build: _Build, state: _IndexState) -> None:
        raise StepFailedError(
            f"{describe_step(build.step)}: table {build.target.table} does not exist",
            step_id=build.step.id,
            phase="index",
        )

    def _name_taken(self, build: _Build, state: _IndexState) -> None:
        raise StepFailedError(
            f"{describe_step(build.step)}: a relation named {build.target.name} "
            f"already exists and is not an index on {build.target.table}; choose "
            "another name=",
            step_id=build.step.id,
            phase="index",
        )

    def _wait_for_build(self, build: _Build, state: _IndexState) -> None:
        if not build.waited_logged:
            logger.info(
                "step %s: %s is being built by another session; waiting",
                build.step.id,
                build.target.name,
            )
            build.waited_logged = True
        self._sleep(POLL_SECONDS)

    def _drop_invalid(self, build: _Build, state: _IndexState) -> None:
        build.drops += 1
        if build.drops > DEDUP_ROUNDS + self.settings.retry_max_attempts:
            raise StepFailedError(
                f"{describe_step(build.step)}: {build.target.name} stays INVALID "
                f"after {build.drops - 1} rebuilds",
                step_id=build.step.id,
                phase="index",
            )
        logger.warning(
            "step %s: %s is INVALID (an interrupted build) and nobody is "
            "building it: dropping it concurrently to rebuild",
            build.step.id,
            build.target.name,
        )
        self._drop(build.target)
        build.done.append("dropped an INVALID index and rebuilt it")

    def _dedup_and_build(self, build: _Build, state: _IndexState) -> None:
        step, target = build.step, build.target
        if target.dedup_keep is not None and not build.deduped:
            deleted = self._dedup(step, target)
            build.deduped = True
            if deleted:
                build.done.append(f"deleted {deleted} duplicate row(s)")
        try:
            self._build(step, target, state)
        except Exception as exc:
            if is_transient(exc):
                raise  # the policy reads the state again, then retries
            if not build.redo_dedup(exc):
                self._drop_if_invalid(target)
                raise
            logger.warning(
                "step %s: duplicates arrived during the build of %s; "
                "de-duplicating again",
                step.id,
                target.name,
            )
            return
        build.done.append(f"built {target.name}")

    def _state(self, target: IndexTarget) -> _IndexState:
        table = literal(target.qualified_table)
        sql = (
            f"SELECT to_regclass({table}) IS NOT NULL, ic.relkind::text, "
            "coalesce(ix.indisvalid, false), "
            f"coalesce(ix.indrelid = to_regclass({table}), false), "
            "EXISTS (SELECT 1 FROM pg_stat_progress_create_index p "
            "WHERE p.index_relid = ic.oid), current_setting('statement_timeout') "
            "FROM (SELECT 1) AS one "
            f"LEFT JOIN pg_class tc ON tc.oid = to_regclass({table}) "
            "LEFT JOIN pg_class ic ON ic.relnamespace = tc.relnamespace "
            f"AND ic.relname = {literal(target.name)} "
            "LEFT JOIN pg_index ix ON ix.indexrelid = ic.oid"
        )
        row = self.query(sql)[0]
        return _IndexState(
            table_exists=bool(row[0]),
            relkind=row[1],
            valid=bool(row[2]),
            same_table=bool(row[3]),
            building=bool(row[4]),
            statement_timeout=str(row[5]),
        )

    def _index_ident(self, target: IndexTarget) -> str:
        schema = target.table.split(".", 1)[0] if "." in target.table else None
        name = quote_ident(target.name)
        return f"{quote_ident(schema)}.{name}" if schema else name

    def _drop(self, target: IndexTarget) -> None:
        self.query(f"DROP INDEX CONCURRENTLY IF EXISTS {self._index_ident(target)}")

    def _drop_if_invalid(self, target: IndexTarget) -> None:
        try:
            if self._state(target).situation is _Situation.INVALID:
                self._drop(target)
                logger.info(
                    "dropped the INVALID index %s left by the failure", target.name
                )
        except Exception:
            logger.warning(
                "could not drop the INVALID index %s; the next run drops it",
                target.name,
                exc_info=True,
            )

    def _build(self, step: Step, target: IndexTarget, state: _IndexState) -> None:
        """One build attempt on its own connection, outside any transaction."""
        if state.statement_timeout not in ("0", "0ms"):
            logger.warning(
                "step %s: the server's statement_timeout is %s for this role, and a "
                "concurrent build cannot change it (SET LOCAL needs a transaction; a "
                "session SET would leak through the pooler); a long build may be "
                "cancelled: see the README",
                step.id,
                state.statement_timeout,
            )
        logger.info("step %s: building %s concurrently", step.id, target.name)
        send(self.engine, target.sql)

    def _dedup(self, step: Step, target: IndexTarget) -> int:
        """Delete duplicates of the unique index's key in batches; return how many."""
        assert target.dedup_keep is not None
        fn, keep = target.dedup_keep
        batch = max(1, self.settings.backfill_batch_size)
        sql = dedup_sql(target, batch)
        total = 0
        with translate_db_errors(
            step, doing=f"de-duplicating {target.table} before {target.name}"
        ):
            while True:
                deleted = len(self.query(sql))
                total += deleted
                if deleted < batch:
                    break
        if total:
            logger.info(
                "step %s: deleted %d duplicate row(s) of %s, keeping %s(%s) of each",
                step.id,
                total,
                target.table,
                fn,
                keep,
            )
        return total


def _last_statement(handle: LiveHandle) -> t.Callable[[BaseException], str]:
    """A hint naming the statement a function step sent last."""
    return lambda exc: (
        f"; statement: {handle.last_statement}" if handle.last_statement else ""
    )


def dedup_sql(target: IndexTarget, batch: int) -> str:
    """One batch of de-duplication: delete up to ``batch`` rows that share the
    index's key with a row that is kept (``min``/``max`` of the keep column).

    NULL keys are never duplicates (a unique index does not compare them) and the
    index's ``where`` is respected, so exactly the rows that would fail the build
    are deleted.
    """
    assert target.dedup_keep is not None
    fn, keep = target.dedup_keep
    keep_col = quote_ident(keep)
    partition = ", ".join(target.elements)
    not_null = " AND ".join(f"{e} IS NOT NULL" for e in target.elements)
    where = f" AND ({target.where})" if target.where else ""
    return (
        f"DELETE FROM {target.qualified_table} WHERE {keep_col} IN ("
        f"SELECT w.k FROM (SELECT {keep_col} AS k, {fn}({keep_col}) OVER "
        f"(PARTITION BY {partition}) AS keep FROM {target.qualified_table} "
        f"WHERE {not_null}{where}) AS w WHERE w.k <> w.keep LIMIT {batch}) "
        "RETURNING 1"
    )


def _build_hint(
    sqlstate: str | None, target: IndexTarget, statement_timeout: str
) -> str:
    if sqlstate == _UNIQUE_VIOLATION:
        return (
            f"; {target.table} has duplicate values: clean them, or declare "
            "dedup_keep='min(id)' to delete all but one of each"
        )
    if sqlstate == _QUERY_CANCELED:
        return (
            f"; the server's statement_timeout ({statement_timeout}) cancelled "
            "it: set statement_timeout to 0 for the migration role "
            "(ALTER ROLE ... SET statement_timeout = 0), then run again"
        )
    return ""
