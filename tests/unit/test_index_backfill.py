"""Index and backfill steps: registration, generated SQL, batch sizing, progress."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa

from flask_safe_migrate.cli import ProgressPrinter
from flask_safe_migrate.core.commands import record_step
from flask_safe_migrate.core.exceptions import RegistrationError
from flask_safe_migrate.core.exceptions import RetryExhaustedError
from flask_safe_migrate.core.exceptions import StepRefusedError
from flask_safe_migrate.core.ledger import Ledger
from flask_safe_migrate.core.phases.backfill import MAX_BATCH
from flask_safe_migrate.core.phases.backfill import BackfillProgress
from flask_safe_migrate.core.phases.backfill import next_batch_size
from flask_safe_migrate.core.phases.index import IndexPhase
from flask_safe_migrate.core.phases.index import IndexTarget
from flask_safe_migrate.core.phases.index import _custom_target
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.sql import split_statements
from flask_safe_migrate.core.steps import BackfillHandle
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import Step
from flask_safe_migrate.core.steps import StepHandle
from flask_safe_migrate.core.steps import StepRegistry
from flask_safe_migrate.core.steps import default_index_name


def test_declarative_index_builds_a_concurrent_if_not_exists_statement() -> None:
    steps = StepRegistry()
    step = steps.index(
        "0003_messages_key",
        table="public.messages",
        columns=["provider_msg_id", "lower(email)"],
        unique=True,
        where="provider_msg_id IS NOT NULL",
        dedup_keep="MIN(id)",
    )
    assert step.phase is Phase.INDEX
    assert step.sql == (
        'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "messages_provider_msg_id_'
        'expr_key" ON "public"."messages" ("provider_msg_id", (lower(email))) '
        "WHERE provider_msg_id IS NOT NULL"
    )
    (stmt,) = split_statements(step.sql)
    assert stmt.concurrent
    target = IndexTarget.from_options(step.options, step.sql)
    assert target.dedup_keep == ("min", "id")
    assert target.elements == ('"provider_msg_id"', "(lower(email))")
    assert target.qualified_table == '"public"."messages"'


def test_index_checksum_covers_dedup_keep() -> None:
    a = StepRegistry().index("i", table="t", columns=["c"], unique=True)
    b = StepRegistry().index(
        "i", table="t", columns=["c"], unique=True, dedup_keep="min(id)"
    )
    c = StepRegistry().index("i", table="t", columns=["c"], unique=True)
    assert a.checksum == c.checksum
    assert a.checksum != b.checksum


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"columns": []}, "columns must be a non-empty list"),
        ({"columns": "email"}, "columns must be a non-empty list"),
        ({"columns": ["c"], "dedup_keep": "min(id)"}, "dedup_keep needs unique"),
        ({"columns": ["c"], "unique": True, "dedup_keep": "first(id)"}, "min(column)"),
        ({"columns": ["c"], "where": "a = (1"}, "invalid SQL"),
        ({"columns": ["c"], "where": "a = 1; DROP TABLE t"}, "one statement"),
        ({"columns": ["c"], "name": "x" * 64}, "longer than 63 bytes"),
    ],
)
def test_bad_index_options_fail_at_registration(
    kwargs: dict[str, object], fragment: str
) -> None:
    with pytest.raises(RegistrationError, match="index step 'i'") as info:
        StepRegistry().index("i", table="t", **kwargs)  # type: ignore[call-overload]
    assert fragment in str(info.value)
    assert "test_index_backfill.py:" in str(info.value)


def test_default_index_names_fit_in_63_bytes() -> None:
    assert default_index_name("s.leads", ["email"], False) == "leads_email_idx"
    long = default_index_name("t" * 40, ["c" * 40], True)
    assert len(long) == 63
    assert long != default_index_name("t" * 40, ["c" * 41], True)


def test_declarative_backfill_template_is_one_keyset_update() -> None:
    step = StepRegistry().backfill(
        "0004_fill", table="leads", set="order_index = id", where="order_index = 0"
    )
    assert step.phase is Phase.BACKFILL
    assert step.sql == (
        'UPDATE "leads" SET order_index = id WHERE "id" > $1 AND "id" <= $2 '
        "AND (order_index = 0)"
    )
    assert record_step(step) == [step.sql]


def test_bad_backfill_options_fail_at_registration() -> None:
    with pytest.raises(RegistrationError, match="set= must be a SET clause"):
        StepRegistry().backfill("b", table="t", set=" ")
    with pytest.raises(RegistrationError, match="invalid SQL"):
        StepRegistry().backfill("b", table="t", set="v = (")
    with pytest.raises(RegistrationError, match="need table="):
        StepRegistry().backfill("b", where="x")  # type: ignore[call-overload]


def test_decorator_forms_register_functions_in_their_phase() -> None:
    steps = StepRegistry()

    @steps.backfill("b")
    def fill(batch: BackfillHandle) -> object:
        batch.execute(f"UPDATE t SET v = 1 WHERE id > {batch.after or 0}")
        return None

    @steps.index("i")
    def build(m: StepHandle) -> None:
        m.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS t_v ON t (v)")

    assert [(s.id, s.phase, s.kind) for s in steps.steps()] == [
        ("b", Phase.BACKFILL, "function"),
        ("i", Phase.INDEX, "function"),
    ]
    assert record_step(steps.get("b")) == ["UPDATE t SET v = 1 WHERE id > 0"]


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("CREATE INDEX t_v ON t (v)", "add CONCURRENTLY"),
        ("CREATE INDEX CONCURRENTLY ON t (v)", "name the index"),
        ("ALTER TABLE t ADD COLUMN x int", "index statements only"),
        ("UPDATE t SET v = 1", "index statements only"),
        ("SET statement_timeout = 0", "not allowed"),
        ("ANALYZE t; ANALYZE u", "one statement per execute"),
    ],
)
def test_custom_index_statements_are_checked(sql: str, fragment: str) -> None:
    step = StepRegistry().index("i", table="t", columns=["v"])
    with pytest.raises(StepRefusedError, match=fragment):
        _custom_target("step i", step, sql)


def test_custom_index_build_targets_the_named_index() -> None:
    step = StepRegistry().index("i", table="t", columns=["v"])
    target = _custom_target(
        "step i", step, "CREATE UNIQUE INDEX CONCURRENTLY s_v ON app.t (v)"
    )
    assert target is not None
    assert (target.name, target.table, target.unique) == ("s_v", "app.t", True)
    drop = "DROP INDEX CONCURRENTLY IF EXISTS s_v"
    assert _custom_target("step i", step, drop) is None


def test_batch_size_aims_at_the_target_time_within_bounds() -> None:
    assert next_batch_size(1000, 0.1, 0.2) == 2000
    assert next_batch_size(1000, 0.01, 0.2) == 2000  # grows at most 2x
    assert next_batch_size(1000, 0.4, 0.2) == 500
    assert next_batch_size(1000, 10.0, 0.2) == 250  # shrinks at most 4x
    assert next_batch_size(1, 10.0, 0.2) == 1
    assert next_batch_size(MAX_BATCH, 0.0, 0.2) == MAX_BATCH
    # Converges: a steady 50 us per row settles at 4000 rows for 0.2 s.
    size = 1000
    for _ in range(20):
        size = next_batch_size(size, size * 50e-6, 0.2)
    assert size == 4000


def _progress(**changes: object) -> BackfillProgress:
    values: dict[str, object] = {
        "step_id": "0004_fill",
        "scanned": 250_000,
        "updated": 200_000,
        "batches": 10,
        "batch_size": 25_000,
        "last_batch_seconds": 0.2,
        "max_batch_seconds": 0.3,
        "estimate": 1_000_000,
        "rate": 50_000.0,
        "elapsed_seconds": 5.0,
    }
    values.update(changes)
    return BackfillProgress(**values)  # type: ignore[arg-type]


def test_progress_fraction_and_eta_come_from_the_estimate() -> None:
    progress = _progress()
    assert progress.fraction == 0.25
    assert progress.eta_seconds == 15.0
    assert progress.describe() == (
        "250,000 rows (25%), 200,000 updated, 50,000 rows/s, ETA 15s"
    )
    unknown = _progress(estimate=None)
    assert unknown.fraction is None
    assert unknown.eta_seconds is None
    assert "ETA" not in unknown.describe()
    assert _progress(done=True).fraction == 1.0


def test_progress_printer_draws_a_bar_on_a_terminal_and_lines_otherwise(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ProgressPrinter(tty=True)(_progress())
    err = capsys.readouterr().err
    assert err.startswith("\r\x1b[K0004_fill [######..................] 250,000 rows")
    assert not err.endswith("\n")
    printer = ProgressPrinter(tty=False, every_seconds=3600)
    printer(_progress())
    printer(_progress(scanned=260_000))  # within the interval: not printed
    printer(_progress(done=True))
    printer(_progress(done=True))  # the final report again: printed once
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("0004_fill: 250,000 rows (25%)")


def test_plan_of_a_dedup_index_shows_the_delete_batches_first() -> None:
    step = StepRegistry().index(
        "i",
        table="m",
        columns=["p", "lower(e)"],
        unique=True,
        where="p <> ''",
        dedup_keep="max(id)",
    )
    delete, build = record_step(step)
    assert build == step.sql
    assert delete == (
        'DELETE FROM "m" WHERE "id" IN (SELECT w.k FROM (SELECT "id" AS k, '
        'max("id") OVER (PARTITION BY "p", (lower(e))) AS keep FROM "m" WHERE '
        "\"p\" IS NOT NULL AND (lower(e)) IS NOT NULL AND (p <> '')) AS w "
        "WHERE w.k <> w.keep LIMIT 1000) RETURNING 1  -- repeated until none"
    )


def test_steps_keep_registration_order_across_phases() -> None:
    """``steps()`` is registration order across phases; a phase filter keeps it."""
    steps = StepRegistry()
    steps.sql("z_add", "ALTER TABLE t ADD COLUMN v int")
    steps.backfill("a_fill", table="t", set="v = 1", where="v IS NULL")
    steps.index("m_index", table="t", columns=["v"])
    steps.sql("b_not_null", "ALTER TABLE t ALTER COLUMN v SET NOT NULL")
    assert [s.id for s in steps.steps()] == ["z_add", "a_fill", "m_index", "b_not_null"]
    assert [s.id for s in steps] == ["z_add", "a_fill", "m_index", "b_not_null"]
    assert [s.id for s in steps.steps(Phase.SCHEMA)] == ["z_add", "b_not_null"]


class TestLeaseWait:
    """An index step waits for another migrator's lease on the shared policy."""

    def phase(
        self, replies: list[object], now: list[float]
    ) -> tuple[IndexPhase, list[float]]:
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            now[0] += seconds

        phase = IndexPhase(
            MigrateSettings(database_uri="postgresql+psycopg2://u@localhost/d"),
            sa.create_engine("postgresql+psycopg2://u@localhost/d"),
            Ledger(),
            owner="me",
            sleep=sleep,
            clock=lambda: now[0],
        )

        def query(sql: str) -> list[tuple[object, ...]]:
            reply = replies.pop(0)
            if isinstance(reply, BaseException):
                raise reply
            return [t.cast(tuple[object, ...], reply)]

        phase.query = query  # type: ignore[method-assign]  # no database here
        return phase, sleeps

    def step(self) -> Step:
        return StepRegistry().index("i", table="t", columns=["v"])

    def test_polls_until_the_lease_is_free(self) -> None:
        """Two polls a second apart while held, then claimed."""
        held = (0, "running", "other", 30.0)
        phase, sleeps = self.phase([held, held, (1, "running", "me", 60.0)], [0.0])
        assert phase._claim_or_wait(self.step(), None) is None
        assert sleeps == [1.0, 1.0]

    def test_stops_at_the_deadline_naming_the_holder(self) -> None:
        """Past the deadline the holder is returned (a ``partial`` outcome)."""
        held = (0, "running", "other", 30.0)
        phase, sleeps = self.phase([held] * 5, [0.0])
        holder = phase._claim_or_wait(self.step(), 2.5)
        assert holder == "other (lease expires in 30s)"
        assert sleeps == [1.0, 1.0, 1.0]  # claims at 0, 1, 2 and 3 s

    def test_applied_by_another_runner(self) -> None:
        phase, sleeps = self.phase([(0, "applied", None, None)], [0.0])
        assert phase._claim_or_wait(self.step(), None) == "applied"
        assert sleeps == []

    def test_an_unreachable_ledger_is_raised_not_waited_for(self) -> None:
        """The query's own retries gave up: that error, not a lease wait."""
        gave_up = RetryExhaustedError(
            "gave up", attempts=3, elapsed_seconds=1.0, last_exception=OSError("x")
        )
        phase, sleeps = self.phase([gave_up], [0.0])
        with pytest.raises(RetryExhaustedError):
            phase._claim_or_wait(self.step(), 5.0)
        assert sleeps == []
