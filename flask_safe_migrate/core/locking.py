"""Who is blocking a table lock: the sessions a waiting schema step queues behind.

The growing ``lock_timeout`` schedule itself is
:func:`~flask_safe_migrate.core.retry.lock_retry_schedule`.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa

from .sql import literal

__all__ = ["describe_blockers"]

_BLOCKERS_SQL = """
SELECT a.pid, coalesce(nullif(a.application_name, ''), '?'), a.state,
       extract(epoch FROM now() - a.xact_start)::float8,
       l.relation::regclass::text, l.mode,
       left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.locktype = 'relation' AND a.pid <> pg_backend_pid()
  AND l.relation = ANY (ARRAY[{relations}]::oid[])
ORDER BY a.xact_start NULLS LAST
LIMIT 5
"""


def describe_blockers(conn: sa.Connection, relations: t.Sequence[str]) -> list[str]:
    """Describe the sessions holding locks on ``relations`` (best effort, one query).

    :returns: one line per session: pid, application, state, transaction age, lock.
    """
    if not relations:
        return []
    regclasses = ", ".join(f"to_regclass({literal(r)})::oid" for r in relations)
    rows = conn.exec_driver_sql(
        _BLOCKERS_SQL.format(relations=regclasses),
        execution_options={"no_parameters": True},
    ).fetchall()
    lines = []
    for pid, app, state, age, relation, mode, query in rows:
        age_text = f"{age:.0f}s" if age is not None else "?"
        lines.append(
            f"pid {pid} ({app}, {state}, transaction open {age_text}) holds "
            f"{mode} on {relation}: {query}"
        )
    return lines
