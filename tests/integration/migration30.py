"""A 30-step schema migration: non-idempotent DDL, a seed without conflict handling."""

from __future__ import annotations

import typing as t

from flask_safe_migrate.core.steps import StepHandle
from flask_safe_migrate.core.steps import StepRegistry

COLUMNS = [f"c{i:02d}" for i in range(1, 25)]
SEED_NAMES = ("alpha", "beta", "gamma")


def build_registry() -> StepRegistry:
    """Return 30 schema steps; running any of them twice would fail or show."""
    steps = StepRegistry()
    steps.sql("m01_items", "CREATE TABLE items (id bigserial PRIMARY KEY, name text)")
    for i, column in enumerate(COLUMNS, start=2):
        # Deliberately without IF NOT EXISTS: a second run raises DuplicateColumn.
        steps.sql(f"m{i:02d}_{column}", f"ALTER TABLE items ADD COLUMN {column} int")
    steps.sql(
        "m26_seed",
        "INSERT INTO items (name) VALUES "
        + ", ".join(f"('{name}')" for name in SEED_NAMES),
        category="seed",
    )
    steps.sql(
        "m27_name_index",
        "-- safe-migrate: ignore require-concurrent-index items is created empty "
        "by m01\nCREATE INDEX items_name ON items (name)",
    )
    steps.sql("m28_comment", "COMMENT ON TABLE items IS 'made by migration30'")

    @steps.step("m29_audit")
    def create_audit(m: StepHandle) -> None:
        m.execute("CREATE TABLE audit (id bigserial PRIMARY KEY, note text)")
        m.execute("ALTER TABLE audit ADD COLUMN at timestamptz DEFAULT now()")

    @steps.step("m30_audit_seed", category="seed")
    def seed_audit(m: StepHandle) -> None:
        m.execute("INSERT INTO audit (note) VALUES ('migrated')")

    return steps


def check_database(query: t.Callable[[str], list[tuple[t.Any, ...]]]) -> None:
    """Assert every step's effect exists exactly once."""
    ledger = [r[0] for r in query("SELECT step_id FROM safe_migrate_ledger")]
    assert sorted(ledger) == sorted(s.id for s in build_registry().steps())
    assert len(ledger) == 30
    columns = {
        r[0]
        for r in query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'items'"
        )
    }
    assert set(COLUMNS) <= columns
    names = sorted(r[0] for r in query("SELECT name FROM items"))
    assert names == sorted(SEED_NAMES)
    assert query("SELECT count(*) FROM audit") == [(1,)]
    assert query("SELECT count(*) FROM pg_indexes WHERE indexname = 'items_name'") == [
        (1,)
    ]
