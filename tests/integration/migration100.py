"""A 100-step SQL migration with a DDL counter: each step's effect, counted on commit.

Odd steps create a table, even steps add a column to the table before (no IF NOT
EXISTS: a second run would fail). An event trigger logs every committed DDL
command in ``ddl_log``, so a test can check that each step ran exactly once.
"""

from __future__ import annotations

import collections
import typing as t

from flask_safe_migrate.core.steps import StepRegistry

COUNT = 100
Query = t.Callable[[str], list[tuple[t.Any, ...]]]

_COUNTER = """
CREATE TABLE IF NOT EXISTS ddl_log (tag text NOT NULL, object text NOT NULL);
CREATE TABLE IF NOT EXISTS hot (id int);
CREATE OR REPLACE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ddl_log (tag, object)
    SELECT command_tag, object_identity FROM pg_event_trigger_ddl_commands()
    WHERE object_identity LIKE 'public.p%' OR object_identity = 'public.hot';
END $$;
DROP EVENT TRIGGER IF EXISTS log_ddl;
CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION log_ddl();
"""


def step_id(i: int) -> str:
    """The id of step ``i`` (1-based)."""
    return f"p{i:03d}"


def default_sql(i: int) -> str:
    """Step ``i``'s SQL: odd steps create a table, even steps add a column to it."""
    if i % 2:
        return f"CREATE TABLE p{i:03d} (id int)"
    return f"ALTER TABLE p{i - 1:03d} ADD COLUMN c{i:03d} int"


def build_registry(
    extra: t.Mapping[int, str] | None = None, count: int = COUNT
) -> StepRegistry:
    """The migration; ``extra`` adds SQL after some steps' own (1-based)."""
    steps = StepRegistry()
    for i in range(1, count + 1):
        more = (extra or {}).get(i)
        steps.sql(step_id(i), default_sql(i) + (f";\n{more}" if more else ""))
    return steps


def install_counter(query: Query) -> None:
    """Create ``ddl_log``, the table ``hot`` and the event trigger (superuser)."""
    query(_COUNTER)


def expected_ddl(i: int, extra: str | None = None) -> list[tuple[str, str]]:
    """The DDL commands step ``i`` logs: tag and object."""
    own = (
        ("CREATE TABLE", f"public.p{i:03d}")
        if i % 2
        else ("ALTER TABLE", f"public.p{i - 1:03d}")
    )
    return [own] + ([("ALTER TABLE", "public.hot")] if extra and "hot" in extra else [])


def check_applied(
    query: Query,
    steps: t.Iterable[int],
    extra: t.Mapping[int, str] | None = None,
) -> None:
    """Assert the ledger holds exactly ``steps`` and each logged its DDL once."""
    chosen = sorted(steps)
    ledger = sorted(r[0] for r in query("SELECT step_id FROM safe_migrate_ledger"))
    assert ledger == [step_id(i) for i in chosen]
    logged = collections.Counter(
        (r[0], r[1]) for r in query("SELECT tag, object FROM ddl_log")
    )
    expected = collections.Counter(
        ddl for i in chosen for ddl in expected_ddl(i, (extra or {}).get(i))
    )
    assert logged == expected
