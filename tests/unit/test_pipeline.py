"""Pipelined schema steps: which steps share a message, how many, what it says."""

from __future__ import annotations

import typing as t

import sqlalchemy as sa

from flask_safe_migrate.core.ledger import ALREADY_APPLIED_SQLSTATE
from flask_safe_migrate.core.ledger import LOCK_WAIT_SQLSTATE
from flask_safe_migrate.core.ledger import Ledger
from flask_safe_migrate.core.phases.pipeline import MAX_MESSAGE_BYTES
from flask_safe_migrate.core.phases.pipeline import SchemaPipeline
from flask_safe_migrate.core.phases.pipeline import _Item
from flask_safe_migrate.core.phases.pipeline import is_pipelined
from flask_safe_migrate.core.phases.schema import SchemaPhase
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.steps import StepHandle
from flask_safe_migrate.core.steps import StepRegistry


def pipeline(**changes: t.Any) -> SchemaPipeline:
    settings = MigrateSettings(database_uri="postgresql+psycopg2://u@h/db", **changes)
    engine = sa.create_engine(settings.database_uri or "")
    return SchemaPipeline(SchemaPhase(settings, engine, Ledger()))


def test_only_sql_schema_steps_are_pipelined() -> None:
    steps = StepRegistry()
    steps.sql("a", "CREATE TABLE a (id int)")
    steps.index("b", table="a", columns=["id"])

    @steps.step("c")
    def c(m: StepHandle) -> None:
        m.execute("CREATE TABLE c (id int)")

    assert [is_pipelined(s) for s in steps.steps()] == [True, False, False]


def test_steps_per_message_follow_the_first_lock_timeout() -> None:
    assert pipeline().steps_per_message() == 50
    assert pipeline(lock_timeout_initial_seconds=1.0).steps_per_message() == 5
    assert (
        pipeline(
            lock_timeout_initial_seconds=10.0, lock_timeout_seconds=10.0
        ).steps_per_message()
        == 1
    )


def test_a_message_is_cut_by_size_but_carries_at_least_one_step() -> None:
    steps = StepRegistry()
    big = "COMMENT ON TABLE a IS '" + "x" * (MAX_MESSAGE_BYTES // 2) + "'"
    for i in range(4):
        steps.sql(f"s{i}", big)
    taken = pipeline()._take(steps.steps())
    assert [s.id for s in taken] == ["s0"]
    huge = StepRegistry()
    huge.sql("h", big + big[:30])
    assert len(pipeline()._take(huge.steps())) == 1


def test_each_step_is_its_own_guarded_transaction_in_the_message() -> None:
    steps = StepRegistry()
    steps.sql("s1", "CREATE TABLE a (id int) -- trailing comment")
    steps.sql("s2", "CREATE TABLE b (id int)")
    p = pipeline(statement_timeout_seconds=5)
    message = p._message([_Item(s, attempts=1) for s in steps.steps()])
    assert message.count("BEGIN;\n") == 2
    assert message.count("COMMIT") == 2
    assert message.count("pg_advisory_xact_lock") == 2
    assert message.count(LOCK_WAIT_SQLSTATE) == 2
    assert message.count(ALREADY_APPLIED_SQLSTATE) == 2
    assert message.count("SET LOCAL lock_timeout = '100ms'") == 2
    assert message.count("SET LOCAL statement_timeout = '5000ms'") == 2
    # The comment ends at a newline: the statement after it is not swallowed.
    assert "-- trailing comment\n;" in message
    first, second = message.split("COMMIT;\n", 1)
    assert "'s1'" in first
    assert "'s2'" not in first
    assert second.rstrip().endswith("IN ('s1', 's2')")
