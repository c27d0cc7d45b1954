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

import logging
import os
import socket
import threading
import typing as t
import uuid
from dataclasses import dataclass

import pglast
import pglast.ast
import pglast.enums
import sqlalchemy as sa

from ..disconnects import ErrorKind
from ..disconnects import classify_error
from ..disconnects import describe_error
from ..disconnects import error_sqlstate
from ..exceptions import StepFailedError
from ..exceptions import StepRefusedError
from ..ledger import Ledger
from ..ledger import duration_literal
from ..ledger import literal
from ..ledger import quote_ident
from ..settings import MigrateSettings
from ..sql import SqlSyntaxError
from ..sql import StatementKind
from ..sql import split_statements
from ..steps import Step
from ..steps import index_element
from ..steps import quote_name
from ..transaction import open_autocommit
from ..transaction import release
from ..transaction import send
from ..transaction import send_idempotent
from . import PhaseRunner
from . import StepOutcome

__all__ = ["IndexPhase", "IndexTarget", "dedup_sql", "migrator_id"]

logger = logging.getLogger(__name__)

_NO_PARAMS = {"no_parameters": True}
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


@dataclass(frozen=True)
class _IndexState:
    table_exists: bool
    relkind: str | None  # None: no relation of that name in the table's schema
    valid: bool
    same_table: bool
    building: bool
    statement_timeout: str


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


class IndexHandle:
    """The handle of a ``@migrate.index`` function: each build is repaired and
    confirmed valid; other index statements are sent outside a transaction."""

    def __init__(self, phase: IndexPhase, step: Step) -> None:
        self._phase = phase
        self._step = step
        self.built: list[str] = []

    @property
    def step(self) -> Step:
        return self._step

    def execute(
        self, sql: str, params: t.Mapping[str, t.Any] | None = None
    ) -> list[tuple[t.Any, ...]]:
        where = f"step {self._step.id} ({self._step.location})"
        if params:
            raise StepRefusedError(
                f"{where}: index statements take no parameters; put the values in "
                "the SQL",
                step_id=self._step.id,
                phase="index",
            )
        target = _custom_target(where, self._step, sql)
        if target is None:
            return send_idempotent(self._phase.engine, sql, self._phase.policy())
        self._phase.ensure_index(self._step, target)
        self.built.append(target.name)
        return []


def _custom_target(where: str, step: Step, sql: str) -> IndexTarget | None:
    """The build of a custom index statement, or None for another index statement."""
    try:
        statements = split_statements(sql)
    except SqlSyntaxError as exc:
        raise StepRefusedError(
            f"{where}: invalid SQL: {exc.message}", step_id=step.id, phase="index"
        ) from exc
    if len(statements) != 1:
        raise StepRefusedError(
            f"{where}: send one statement per execute() in an index step (a "
            "concurrent build cannot share a message with anything)",
            step_id=step.id,
            phase="index",
        )
    stmt = statements[0]
    if stmt.kind in (StatementKind.TRANSACTION_CONTROL, StatementKind.SESSION_SETTING):
        raise StepRefusedError(
            f"{where}: {stmt.kind.value} is not allowed in a step: {stmt.sql}",
            step_id=step.id,
            phase="index",
        )
    if stmt.node_type not in _INDEX_NODES:
        raise StepRefusedError(
            f"{where}: an index step runs index statements only (CREATE/DROP INDEX "
            f"CONCURRENTLY, REINDEX, ANALYZE), not {stmt.node_type}: {stmt.sql}",
            step_id=step.id,
            phase="index",
        )
    node = pglast.parse_sql(stmt.sql)[0].stmt
    if isinstance(node, pglast.ast.AlterTableStmt) and node.objtype != (
        pglast.enums.ObjectType.OBJECT_INDEX
    ):
        raise StepRefusedError(
            f"{where}: an index step runs index statements only; ALTER TABLE "
            f"belongs in a schema step: {stmt.sql}",
            step_id=step.id,
            phase="index",
        )
    if stmt.node_type != "IndexStmt":
        return None
    assert isinstance(node, pglast.ast.IndexStmt)
    if not node.concurrent:
        raise StepRefusedError(
            f"{where}: CREATE INDEX without CONCURRENTLY blocks writes to the table "
            f"for the whole build; add CONCURRENTLY: {stmt.sql}",
            step_id=step.id,
            phase="index",
        )
    if not node.idxname:
        raise StepRefusedError(
            f"{where}: name the index, so an interrupted build can be found and "
            f"repaired: {stmt.sql}",
            step_id=step.id,
            phase="index",
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
        attempts = 0
        while True:
            claim = self._claim(step)
            if claim == "applied":
                logger.info("step %s: already applied by another runner", step.id)
                return StepOutcome(
                    step.id, "index", "skipped", detail="applied by another runner"
                )
            if claim == "mine":
                break
            if deadline is not None and self._clock() >= deadline:
                return StepOutcome(
                    step.id, "index", "partial", detail=f"waiting for {claim}"
                )
            if attempts % 30 == 0:
                logger.info(
                    "step %s: %s holds the build lease; waiting", step.id, claim
                )
            attempts += 1
            self._sleep(POLL_SECONDS)
        try:
            with _Lease(self, step, self.settings.index_lease_seconds / 3):
                detail = self._build_step(step)
            self._finish(step, self._clock() - started)
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
        if step.fn is not None:
            handle = IndexHandle(self, step)
            step.fn(handle)
            return f"built {', '.join(handle.built)}" if handle.built else ""
        assert step.sql is not None
        return self.ensure_index(step, IndexTarget.from_options(step.options, step.sql))

    # -- the lease -----------------------------------------------------------------

    def _claim(self, step: Step) -> str:
        """``mine``, ``applied``, or who holds the lease (and for how long)."""
        q = self.ledger.qualified
        sql = (
            f"WITH claim AS (INSERT INTO {q} AS l (step_id, phase, checksum, state, "
            "attempts, lease_owner, lease_expires_at) VALUES "
            f"({literal(step.id)}, 'index', {literal(step.checksum)}, 'running', 1, "
            f"{literal(self.owner)}, clock_timestamp() + {self._lease_interval()}) "
            "ON CONFLICT (step_id) DO UPDATE SET lease_owner = EXCLUDED.lease_owner, "
            "lease_expires_at = EXCLUDED.lease_expires_at, "
            "checksum = EXCLUDED.checksum, "
            "attempts = l.attempts + (l.lease_owner IS DISTINCT FROM "
            "EXCLUDED.lease_owner)::int "
            "WHERE l.state <> 'applied' AND (l.lease_owner IS NULL OR "
            "l.lease_owner = EXCLUDED.lease_owner OR "
            "l.lease_expires_at < clock_timestamp()) RETURNING 1) "
            "SELECT (SELECT count(*) FROM claim), "
            f"(SELECT state FROM {q} WHERE step_id = {literal(step.id)}), "
            f"(SELECT lease_owner FROM {q} WHERE step_id = {literal(step.id)}), "
            "(SELECT extract(epoch FROM lease_expires_at - clock_timestamp()) "
            f"FROM {q} WHERE step_id = {literal(step.id)})"
        )
        claimed, state, owner, remaining = send_idempotent(
            self.engine, sql, self.policy()
        )[0]
        if claimed:
            return "mine"
        if state == "applied":
            return "applied"
        return f"{owner} (lease expires in {float(remaining or 0):.0f}s)"

    def _lease_interval(self) -> str:
        return f"{duration_literal(self.settings.index_lease_seconds)}::interval"

    def renew_lease(self, step: Step) -> bool:
        """Extend the lease; False when another migrator has taken it over."""
        sql = (
            f"UPDATE {self.ledger.qualified} SET lease_expires_at = "
            f"clock_timestamp() + {self._lease_interval()} "
            f"WHERE step_id = {literal(step.id)} AND lease_owner = "
            f"{literal(self.owner)} RETURNING 1"
        )
        # The renewer's own connection, not the pool's retry: it must not dispose
        # the engine under the build, and it tries again at the next tick.
        conn = open_autocommit(self.engine)
        try:
            rows = conn.exec_driver_sql(sql, execution_options=_NO_PARAMS).fetchall()
        except Exception:
            conn.invalidate()
            conn.close()
            raise
        release(conn)
        return bool(rows)

    def _release_lease(self, step: Step) -> None:
        sql = (
            f"UPDATE {self.ledger.qualified} SET lease_owner = NULL, "
            f"lease_expires_at = NULL WHERE step_id = {literal(step.id)} "
            f"AND lease_owner = {literal(self.owner)} AND state <> 'applied'"
        )
        try:
            send_idempotent(self.engine, sql, self.policy())
        except Exception:
            logger.debug("releasing the lease of %s failed", step.id, exc_info=True)

    def _finish(self, step: Step, seconds: float) -> None:
        sql = (
            f"UPDATE {self.ledger.qualified} SET state = 'applied', "
            "applied_at = clock_timestamp(), lease_owner = NULL, "
            f"lease_expires_at = NULL, duration_seconds = {literal(float(seconds))} "
            f"WHERE step_id = {literal(step.id)} AND state <> 'applied'"
        )
        send_idempotent(self.engine, sql, self.policy())

    # -- the build -----------------------------------------------------------------

    def ensure_index(self, step: Step, target: IndexTarget) -> str:
        """Make ``target`` exist and be valid: repair, de-duplicate, build, confirm.

        :returns: what was done, for the run report.
        :raises StepFailedError: the build failed for a reason retrying cannot fix.
        """
        where = f"step {step.id} ({step.location})"
        done: list[str] = []
        drops = failures = dedup_rounds = 0
        deduped = False
        waited_logged = False
        while True:
            state = self._state(target)
            if not state.table_exists:
                raise StepFailedError(
                    f"{where}: table {target.table} does not exist",
                    step_id=step.id,
                    phase="index",
                )
            if state.relkind is not None and (
                state.relkind not in ("i", "I") or not state.same_table
            ):
                raise StepFailedError(
                    f"{where}: a relation named {target.name} already exists and is "
                    f"not an index on {target.table}; choose another name=",
                    step_id=step.id,
                    phase="index",
                )
            if state.relkind is not None and state.valid:
                if not done:
                    done.append("index already valid")
                return "; ".join(done)
            if state.building:
                if not waited_logged:
                    logger.info(
                        "step %s: %s is being built by another session; waiting",
                        step.id,
                        target.name,
                    )
                    waited_logged = True
                self._sleep(POLL_SECONDS)
                continue
            if state.relkind is not None:
                drops += 1
                if drops > DEDUP_ROUNDS + self.settings.retry_max_attempts:
                    raise StepFailedError(
                        f"{where}: {target.name} stays INVALID after {drops - 1} "
                        "rebuilds",
                        step_id=step.id,
                        phase="index",
                    )
                logger.warning(
                    "step %s: %s is INVALID (an interrupted build) and nobody is "
                    "building it: dropping it concurrently to rebuild",
                    step.id,
                    target.name,
                )
                self._drop(target)
                done.append("dropped an INVALID index and rebuilt it")
                continue
            if target.dedup_keep is not None and not deduped:
                deleted = self._dedup(step, target)
                deduped = True
                if deleted:
                    done.append(f"deleted {deleted} duplicate row(s)")
            try:
                self._build(step, target, state)
            except Exception as exc:
                kind = classify_error(exc)
                if kind in (
                    ErrorKind.DISCONNECT,
                    ErrorKind.CONNECT_FAILED,
                    ErrorKind.CONFLICT,
                ):
                    failures += 1
                    if failures >= self.settings.retry_max_attempts:
                        raise StepFailedError(
                            f"{where}: the build of {target.name} failed "
                            f"{failures} times: {describe_error(exc)}",
                            step_id=step.id,
                            phase="index",
                        ) from exc
                    pause = self.backoff(failures)
                    logger.warning(
                        "step %s: the build of %s was interrupted (%s); checking "
                        "its state again in %.2fs",
                        step.id,
                        target.name,
                        describe_error(exc),
                        pause,
                    )
                    self._sleep(pause)
                    continue
                sqlstate = error_sqlstate(exc)
                if (
                    sqlstate == _UNIQUE_VIOLATION
                    and target.dedup_keep is not None
                    and dedup_rounds < DEDUP_ROUNDS
                ):
                    dedup_rounds += 1
                    deduped = False
                    logger.warning(
                        "step %s: duplicates arrived during the build of %s; "
                        "de-duplicating again",
                        step.id,
                        target.name,
                    )
                    continue
                self._drop_if_invalid(target)
                raise StepFailedError(
                    f"{where}: the build of {target.name} failed: "
                    f"{describe_error(exc)}{_build_hint(sqlstate, target, state)}",
                    step_id=step.id,
                    phase="index",
                ) from exc
            done.append(f"built {target.name}")

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
        row = send_idempotent(self.engine, sql, self.policy())[0]
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
        send_idempotent(
            self.engine,
            f"DROP INDEX CONCURRENTLY IF EXISTS {self._index_ident(target)}",
            self.policy(),
        )

    def _drop_if_invalid(self, target: IndexTarget) -> None:
        try:
            state = self._state(target)
            if state.relkind in ("i", "I") and not state.valid and not state.building:
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
        while True:
            try:
                rows = send_idempotent(self.engine, sql, self.policy())
            except sa.exc.DBAPIError as exc:
                raise StepFailedError(
                    f"step {step.id} ({step.location}): de-duplicating "
                    f"{target.table} before {target.name} failed: "
                    f"{describe_error(exc)}",
                    step_id=step.id,
                    phase="index",
                ) from exc
            total += len(rows)
            if len(rows) < batch:
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


def _build_hint(sqlstate: str | None, target: IndexTarget, state: _IndexState) -> str:
    if sqlstate == _UNIQUE_VIOLATION:
        return (
            f"; {target.table} has duplicate values: clean them, or declare "
            "dedup_keep='min(id)' to delete all but one of each"
        )
    if sqlstate == _QUERY_CANCELED:
        return (
            f"; the server's statement_timeout ({state.statement_timeout}) cancelled "
            "it: set statement_timeout to 0 for the migration role "
            "(ALTER ROLE ... SET statement_timeout = 0), then run again"
        )
    return ""
