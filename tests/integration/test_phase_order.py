"""Steps run in registration order across phases, through TLS PgBouncer.

The expand/contract sequence (add a nullable column; backfill it; ``SET NOT
NULL``) works in one run of all phases, and the boot run (schema only) stops
before the backfill, leaving it and what follows ``waiting``.
"""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.engine import build_migration_engine
from flask_safe_migrate.core.exceptions import StepFailedError
from flask_safe_migrate.core.phases import StepOutcome
from flask_safe_migrate.core.runner import Runner
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import StepRegistry

from .services import TestDatabase
from .test_phase_schema import ledger_ids
from .test_phase_schema import settings_for

ROWS = 2_500


def make_leads(db: TestDatabase) -> None:
    """``leads(id)`` with ``ROWS`` rows."""
    db.postgres.execute(
        "CREATE TABLE leads (id bigint PRIMARY KEY); "
        f"INSERT INTO leads SELECT g FROM generate_series(1, {ROWS}) g",
        dbname=db.name,
    )


def expand_contract() -> StepRegistry:
    """Add a nullable column, index it, backfill it, then make it NOT NULL."""
    reg = StepRegistry()
    reg.sql("0001_add_score", "ALTER TABLE leads ADD COLUMN score bigint")
    reg.backfill(
        "0002_fill_score", table="leads", set="score = id * 10", where="score IS NULL"
    )
    reg.index("0003_score_index", table="leads", columns=["score"])
    reg.sql("0004_score_not_null", "ALTER TABLE leads ALTER COLUMN score SET NOT NULL")
    return reg


def runner(
    db: TestDatabase,
    reg: StepRegistry,
    engines: list[sa.Engine],
    on_outcome: t.Callable[[StepOutcome], None] | None = None,
) -> Runner:
    """A runner through TLS PgBouncer, small batches."""
    settings = settings_for(db.bouncer_url, backfill_batch_size=500)
    engine = build_migration_engine(settings)
    engines.append(engine)
    return Runner(settings, reg, engine, on_outcome=on_outcome)


def score_column(db: TestDatabase) -> tuple[str, int, int]:
    """``is_nullable`` of ``leads.score``, and how many rows have the right value."""
    nullable = db.scalar(
        "SELECT is_nullable FROM information_schema.columns "
        "WHERE table_name = 'leads' AND column_name = 'score'"
    )
    right = db.scalar("SELECT count(*) FROM leads WHERE score = id * 10")
    nulls = db.scalar("SELECT count(*) FROM leads WHERE score IS NULL")
    return nullable, right, nulls


def test_expand_contract_applies_in_one_run_of_all_phases(
    database: TestDatabase, engines: list[sa.Engine]
) -> None:
    """Add column, backfill, index, SET NOT NULL: one run, in registration order;
    each outcome is reported before the next step starts."""
    make_leads(database)
    seen: list[tuple[str, str, list[str]]] = []

    def on_outcome(outcome: StepOutcome) -> None:
        seen.append((outcome.step_id, outcome.status, ledger_applied(database)))

    report = runner(database, expand_contract(), engines, on_outcome).run(list(Phase))
    order = ["0001_add_score", "0002_fill_score", "0003_score_index"]
    order.append("0004_score_not_null")
    assert [(o.step_id, o.status) for o in report.outcomes] == [
        (i, "applied") for i in order
    ]
    assert report.waiting == []
    # Each callback saw the ledger with its own step applied and the next not yet.
    assert seen == [(i, "applied", order[: n + 1]) for n, i in enumerate(order)]
    assert score_column(database) == ("NO", ROWS, 0)
    assert ledger_ids(database) == order


def ledger_applied(db: TestDatabase) -> list[str]:
    """Applied step ids, in id order."""
    return [
        r[0]
        for r in db.query(
            "SELECT step_id FROM safe_migrate_ledger WHERE state = 'applied' ORDER BY 1"
        )
    ]


def test_boot_run_stops_before_the_first_pending_backfill(
    database: TestDatabase, engines: list[sa.Engine]
) -> None:
    """A schema-only run applies the schema steps up to the backfill and stops;
    the rest waits, and a run of all phases then finishes it."""
    make_leads(database)
    reg = expand_contract()
    boot = runner(database, reg, engines).run([Phase.SCHEMA])
    assert [(o.step_id, o.status) for o in boot.outcomes] == [
        ("0001_add_score", "applied")
    ]
    assert [s.id for s in boot.pending] == ["0001_add_score"]
    assert [s.id for s in boot.waiting] == [
        "0002_fill_score",
        "0003_score_index",
        "0004_score_not_null",
    ]
    assert ledger_ids(database) == ["0001_add_score"]
    assert score_column(database) == ("YES", 0, ROWS)
    again = runner(database, reg, engines).run([Phase.SCHEMA])
    assert again.outcomes == []
    assert again.up_to_date
    assert [s.id for s in again.waiting] == [s.id for s in boot.waiting]
    rest = runner(database, reg, engines).run(list(Phase))
    assert [o.step_id for o in rest.applied] == [s.id for s in boot.waiting]
    assert rest.waiting == []
    assert score_column(database) == ("NO", ROWS, 0)
    after = runner(database, reg, engines).run([Phase.SCHEMA])
    assert after.up_to_date
    assert after.waiting == []


def test_failed_step_report_has_the_outcomes_before_it(
    database: TestDatabase, engines: list[sa.Engine]
) -> None:
    """A failing step's error carries the outcomes so far; each was reported."""
    make_leads(database)
    reg = StepRegistry()
    reg.sql("0001_add_score", "ALTER TABLE leads ADD COLUMN score bigint")
    reg.backfill("0002_fill_score", table="leads", set="score = id")
    reg.sql("0003_bad", "ALTER TABLE no_such_table ADD COLUMN x int")
    reg.sql("0004_never", "ALTER TABLE leads ADD COLUMN y int")
    seen: list[str] = []
    with pytest.raises(StepFailedError) as info:
        runner(database, reg, engines, lambda o: seen.append(o.step_id)).run(
            list(Phase)
        )
    assert info.value.step_id == "0003_bad"
    report = info.value.report
    assert [o.step_id for o in report.outcomes] == ["0001_add_score", "0002_fill_score"]
    assert seen == ["0001_add_score", "0002_fill_score"]
    assert ledger_ids(database) == ["0001_add_score", "0002_fill_score"]
    assert database.scalar("SELECT count(*) FROM leads WHERE score = id") == ROWS


def test_dry_run_and_chosen_steps_follow_the_same_order(
    database: TestDatabase, engines: list[sa.Engine]
) -> None:
    """A dry boot run plans the schema steps before the backfill and lists the rest
    as waiting; ``step_ids`` runs just those steps, with nothing waiting."""
    make_leads(database)
    reg = expand_contract()
    dry = runner(database, reg, engines).run([Phase.SCHEMA], dry_run=True)
    assert [(o.step_id, o.status) for o in dry.outcomes] == [
        ("0001_add_score", "planned")
    ]
    assert [s.id for s in dry.waiting][:1] == ["0002_fill_score"]
    assert ledger_ids(database) == []
    chosen = runner(database, reg, engines).run(
        [Phase.SCHEMA], step_ids=["0001_add_score"]
    )
    assert [o.step_id for o in chosen.applied] == ["0001_add_score"]
    assert chosen.waiting == []
    assert ledger_ids(database) == ["0001_add_score"]
