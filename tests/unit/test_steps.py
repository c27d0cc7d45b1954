"""Step registration, checksums, and what the schema phase refuses before running."""

from __future__ import annotations

import pytest

from flask_safe_migrate.core.exceptions import DuplicateStepError
from flask_safe_migrate.core.exceptions import RegistrationError
from flask_safe_migrate.core.exceptions import StepOrderError
from flask_safe_migrate.core.exceptions import StepRefusedError
from flask_safe_migrate.core.ledger import Ledger
from flask_safe_migrate.core.ledger import literal
from flask_safe_migrate.core.ledger import quote_ident
from flask_safe_migrate.core.phases.schema import check_schema_sql
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import StepHandle
from flask_safe_migrate.core.steps import StepRegistry


def test_duplicate_id_names_both_locations() -> None:
    """A duplicate id fails at registration with the id and both file:line places."""
    steps = StepRegistry()
    steps.sql("0001", "CREATE TABLE a (id int)")
    with pytest.raises(DuplicateStepError) as info:
        steps.sql("0001", "CREATE TABLE b (id int)")
    message = str(info.value)
    assert "'0001'" in message
    assert message.count("test_steps.py:") == 2
    assert info.value.step_id == "0001"


def test_steps_keep_registration_order_within_phases() -> None:
    """Steps run in registration order; the decorator returns the function unchanged."""
    steps = StepRegistry()
    steps.sql("b", "CREATE TABLE b (id int)")

    @steps.step("a")
    def make_a(m: StepHandle) -> None:
        m.execute("CREATE TABLE a (id int)")

    steps.sql("c", "CREATE TABLE c (id int)")
    assert [s.id for s in steps.steps(Phase.SCHEMA)] == ["b", "a", "c"]
    assert steps.get("a").fn is make_a
    assert steps.get("a").kind == "function"


def test_unknown_step_suggests_close_ids() -> None:
    """Asking for a missing id lists the close ones."""
    steps = StepRegistry()
    steps.sql("0001_leads", "CREATE TABLE a (id int)")
    with pytest.raises(StepOrderError, match="did you mean 0001_leads"):
        steps.get("0001_lead")


@pytest.mark.parametrize("bad", ["", "  ", " x", "x" * 201])
def test_bad_ids_are_rejected(bad: str) -> None:
    """Ids are non-empty, trimmed, and short."""
    with pytest.raises(RegistrationError):
        StepRegistry().sql(bad, "CREATE TABLE a (id int)")


def test_unknown_category_is_rejected() -> None:
    """Only the documented small-DML categories exist."""
    with pytest.raises(RegistrationError, match="unknown category 'seeds'"):
        StepRegistry().sql("x", "INSERT INTO a VALUES (1)", category="seeds")


def test_sql_checksum_ignores_formatting_only() -> None:
    """Whitespace, comments and keyword case keep a checksum; a literal changes it."""
    a = StepRegistry().sql("x", "ALTER TABLE a ADD COLUMN b int DEFAULT 0")
    b = StepRegistry().sql("x", "-- note\nalter table a\n  add column b int default 0;")
    c = StepRegistry().sql("x", "ALTER TABLE a ADD COLUMN b int DEFAULT 1")
    assert a.checksum == b.checksum
    assert a.checksum != c.checksum


def test_function_checksum_ignores_docstring_and_comments() -> None:
    """A function step's checksum follows its code, not its docstring or comments."""

    def one(m: StepHandle) -> None:
        """Doc."""
        m.execute("CREATE TABLE a (id int)")

    def two(m: StepHandle) -> None:
        # a comment
        m.execute("CREATE TABLE a (id int)")

    def three(m: StepHandle) -> None:
        m.execute("CREATE TABLE a (id bigint)")

    reg = StepRegistry()
    for name, fn in (("one", one), ("two", two), ("three", three)):
        reg.step(name)(fn)
    s1, s2, s3 = reg.get("one"), reg.get("two"), reg.get("three")
    assert s1.checksum == s2.checksum
    assert s1.checksum != s3.checksum


def _step(sql: str, category: str | None = None) -> tuple[StepRegistry, str]:
    reg = StepRegistry()
    reg.sql("s", sql, category=category)
    return reg, sql


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("INSERT INTO a VALUES (1)", "INSERT in a schema step"),
        ("UPDATE a SET b = 1", "UPDATE in a schema step"),
        ("DELETE FROM a", "DELETE in a schema step"),
        ("WITH d AS (DELETE FROM a RETURNING *) SELECT 1", "DELETE in a schema step"),
        ("DO $$BEGIN UPDATE a SET b = 1; END$$", "UPDATE in a schema step"),
        ("COPY a FROM STDIN", "in a schema step"),
        ("BEGIN", "explicit transaction control"),
        ("CREATE TABLE a (id int); COMMIT", "explicit transaction control"),
        ("ROLLBACK", "explicit transaction control"),
        ("SET statement_timeout = 0", "session setting"),
        ("RESET ALL", "session setting"),
        ("CREATE INDEX CONCURRENTLY i ON a (b)", "CONCURRENTLY"),
        ("ALTER TABLE a ADD COLUM b int", "invalid SQL"),
        ("-- nothing", "no statement"),
    ],
)
def test_schema_steps_refuse_what_they_must_not_run(sql: str, fragment: str) -> None:
    """DML, transaction control, session SET, concurrent builds, bad SQL: refused."""
    reg, _ = _step(sql)
    with pytest.raises(StepRefusedError) as info:
        check_schema_sql(reg.get("s"), sql)
    assert fragment in str(info.value)
    assert "step s (" in str(info.value)


@pytest.mark.parametrize(
    ("sql", "category"),
    [
        ("CREATE TABLE a (id int)", None),
        ("SET LOCAL statement_timeout = '5s'; ALTER TABLE a ADD COLUMN b int", None),
        ("CREATE INDEX i ON a (b)", None),
        (
            "DO $$BEGIN IF NOT EXISTS "
            "(SELECT 1 FROM pg_constraint WHERE conname = 'c') "
            "THEN ALTER TABLE a ADD CONSTRAINT c CHECK (b > 0); END IF; END$$",
            None,
        ),
        ("INSERT INTO a VALUES (1)", "seed"),
        (
            "DELETE FROM a WHERE id NOT IN (SELECT min(id) FROM a GROUP BY b)",
            "dedup_before_unique",
        ),
    ],
)
def test_schema_steps_allow_ddl_and_declared_dml(
    sql: str, category: str | None
) -> None:
    """DDL, SET LOCAL, DO blocks without DML and declared small DML pass."""
    reg, _ = _step(sql, category)
    assert check_schema_sql(reg.get("s"), sql)


def test_refusal_names_the_line() -> None:
    """The refusal points at the statement's line in the step's SQL."""
    sql = "CREATE TABLE a (id int);\n\nINSERT INTO a VALUES (1)"
    reg, _ = _step(sql)
    with pytest.raises(StepRefusedError, match="line 3 of its SQL: INSERT INTO a"):
        check_schema_sql(reg.get("s"), sql)


def test_ledger_quotes_names_and_literals() -> None:
    """Identifiers are always quoted and literals escaped."""
    ledger = Ledger('odd"name', schema="ops")
    assert ledger.qualified == '"ops"."odd""name"'
    assert literal("it's") == "'it''s'"
    assert literal(None) == "NULL"
    assert literal({"a": 1}) == "'{\"a\": 1}'::jsonb"
    assert quote_ident("x") == '"x"'
    with pytest.raises(ValueError, match="NUL"):
        literal("a\x00b")


def test_lock_keys_differ_per_ledger() -> None:
    """Two ledgers in one database do not share a migration lock."""
    assert Ledger("a").lock_key != Ledger("b").lock_key
    assert Ledger("a").lock_key == Ledger("a").lock_key


def test_bound_parameters_do_not_break_the_check() -> None:
    """A function step's ``:name`` parameters are parsed as placeholders."""
    from flask_safe_migrate.core.phases.schema import _placeholders

    sql = "INSERT INTO a (b) VALUES (:b) -- x::int"
    assert _placeholders(sql).startswith("INSERT INTO a (b) VALUES ($1)")
    assert "x::int" in _placeholders(sql)
    reg, _ = _step("INSERT INTO a (b) VALUES (1)", "seed")
    assert check_schema_sql(reg.get("s"), _placeholders(sql))
