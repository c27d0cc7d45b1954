"""Table-lock retries that do not stall live traffic, and who is blocking.

While an ``ALTER TABLE`` waits for its lock, every later query on that table queues
behind it. So each attempt waits only briefly (``SET LOCAL lock_timeout``), starting
small and growing attempt by attempt up to the configured maximum, with pauses in
between during which the queued queries drain. This follows GitLab's
``WithLockRetries`` timing schedule, in closed form.
"""

from __future__ import annotations

import random
import typing as t
from dataclasses import dataclass

import sqlalchemy as sa

from .sql import literal

__all__ = ["LockAttempt", "describe_blockers", "lock_retry_schedule"]

#: Growth of the lock timeout from one attempt to the next.
_GROWTH = 1.35
#: Once an attempt may hold live queries for a second or more, pause this many
#: times longer than it waited, so at most a quarter of the time is spent waiting.
_LONG_PAUSE_FACTOR = 3.0


@dataclass(frozen=True)
class LockAttempt:
    """Lock timeout for one attempt and the pause after it fails."""

    lock_timeout_seconds: float
    pause_seconds: float


def lock_retry_schedule(
    attempt: int,
    *,
    initial_seconds: float,
    maximum_seconds: float,
    rng: random.Random | None = None,
) -> LockAttempt:
    """Return the lock timeout of ``attempt`` (0-based) and the pause that follows it.

    The timeout grows geometrically from ``initial_seconds`` to ``maximum_seconds``.
    The pause equals the timeout while attempts are short (under one second), then
    three times the timeout, so the share of time live queries can be held up stays
    small however long the blocker lasts. Pauses get ±20% jitter so that several
    migrators do not retry in lockstep.
    """
    timeout = min(maximum_seconds, initial_seconds * _GROWTH**attempt)
    pause = timeout if timeout < 1.0 else timeout * _LONG_PAUSE_FACTOR
    jitter = (rng or random).uniform(0.8, 1.2)
    return LockAttempt(lock_timeout_seconds=timeout, pause_seconds=pause * jitter)


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
