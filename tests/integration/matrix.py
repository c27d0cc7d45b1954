"""The test matrix: which PostgreSQL and pooler a run uses, and its test subset.

The full suite runs on the default combination: the Debian PostgreSQL (15) behind
PgBouncer in transaction mode. Two environment variables pick another one:

- ``SAFE_MIGRATE_TEST_PG``: a PostgreSQL major; 15 is the Debian server, the others
  come from Python packages installed by ``scripts/install-pg.sh`` into
  ``.venv/pg/<major>``;
- ``SAFE_MIGRATE_TEST_POOLER``: ``pgbouncer-transaction`` (default),
  ``pgbouncer-session``, ``pgpool`` (pgpool-II, connection pooling mode) or
  ``direct`` (no pooler).

On the other combinations CI runs the fault-and-storm subset, ``pytest -m matrix``:
the tests listed in :data:`MATRIX_TESTS`, marked ``matrix`` at collection.
"""

from __future__ import annotations

import os
import typing as t

import pytest

from .services import PgBouncer
from .services import Postgres
from .services import find_pgbouncer
from .services.direct import Direct
from .services.pgpool import Pgpool
from .services.pgpool import find_pgpool
from .services.pooler import Pooler

POOLERS = ("pgbouncer-transaction", "pgbouncer-session", "pgpool", "direct")
DEFAULT_POOLER = POOLERS[0]
#: The Debian server's major; others come from .venv/pg/<major>.
DEFAULT_MAJOR = 15

#: The fault-and-storm subset run on every combination, as ``file::test`` (every
#: parametrization of a test is in). Listed here rather than marked in each file, so
#: the whole subset reads in one place.
MATRIX_TESTS = (
    # 200 counting upserts through the retry helper under random kills.
    "test_disconnect_retry.py::test_statements_survive_random_kills_exactly_once",
    "test_disconnect_retry.py::test_each_lost_commit_reply_is_resolved_without_reapplying",
    "test_disconnect_retry.py::test_commit_still_in_progress_is_awaited",
    "test_disconnect_retry.py::test_aborted_transaction_is_run_again",
    "test_disconnect_retry.py::test_round_trips_match_a_plain_transaction",
    "test_disconnect_retry.py::test_ambiguous_commit_costs_one_extra_round_trip",
    "test_disconnect_retry.py::test_wrong_password_fails_on_first_attempt",
    "test_disconnect_retry.py::test_refused_connects_are_retried_until_the_pooler_is_back",
    # A lost COMMIT reply on every step; random kills; 8 processes booting at once.
    "test_phase_schema.py::test_thirty_steps_with_every_commit_reply_lost_apply_once",
    "test_phase_schema.py::test_random_kills_during_a_migration_apply_each_step_once",
    "test_phase_schema.py::test_eight_processes_at_once_apply_each_step_once",
    "test_phase_backfill.py::test_lost_batch_replies_and_connection_chaos_update_each_row_once",
    "test_phase_backfill.py::test_each_batch_costs_one_round_trip",
    "test_phase_index.py::test_two_migrators_at_once_build_the_index_once",
    # What the retry helper sends, BEGIN; SELECT xid as one message, through each
    # pooler: the last result, the transaction left open, one round trip.
    "test_driver.py::test_script_is_one_round_trip_and_returns_the_last_result",
    "test_matrix.py",
)


class Combination(t.NamedTuple):
    """The PostgreSQL major and the pooler of this run."""

    major: int
    pooler: str

    @property
    def is_default(self) -> bool:
        """Whether this is the combination the full suite runs on."""
        return self.major == DEFAULT_MAJOR and self.pooler == DEFAULT_POOLER

    def __str__(self) -> str:
        return f"PostgreSQL {self.major}, {self.pooler}"


def selected_combination() -> Combination:
    """Read the combination from the environment.

    :raises pytest.UsageError: on a value that names no combination.
    """
    pooler = os.environ.get("SAFE_MIGRATE_TEST_POOLER") or DEFAULT_POOLER
    if pooler not in POOLERS:
        raise pytest.UsageError(
            f"SAFE_MIGRATE_TEST_POOLER={pooler!r}: use one of {', '.join(POOLERS)}"
        )
    major_text = os.environ.get("SAFE_MIGRATE_TEST_PG") or str(DEFAULT_MAJOR)
    if not major_text.isdigit():
        raise pytest.UsageError(
            f"SAFE_MIGRATE_TEST_PG={major_text!r}: use a PostgreSQL major, e.g. 13"
        )
    return Combination(int(major_text), pooler)


def is_matrix_test(nodeid: str) -> bool:
    """Whether the test ``nodeid`` (from tests/integration/) is in the subset."""
    path, _, rest = nodeid.partition("::")
    name = rest.split("[", 1)[0]
    return any(entry in (path, f"{path}::{name}") for entry in MATRIX_TESTS)


def missing_pooler(name: str) -> list[str]:
    """What the pooler ``name`` needs that is not installed here."""
    if name.startswith("pgbouncer") and find_pgbouncer() is None:
        return ["pgbouncer"]
    if name == "pgpool" and find_pgpool() is None:
        return ["pgpool (Debian package pgpool2)"]
    return []


def make_pooler(
    name: str, postgres: Postgres, **pgbouncer_settings: object
) -> Pooler | Direct:
    """Make (not start) the pooler ``name`` in front of ``postgres``.

    :param pgbouncer_settings: extra ``[pgbouncer]`` settings for the PgBouncers.
    """
    if name == "pgpool":
        return Pgpool(postgres)
    if name == "direct":
        return Direct(postgres)
    mode = name.removeprefix("pgbouncer-")
    return PgBouncer(postgres, settings={"pool_mode": mode, **pgbouncer_settings})


def require(missing: list[str]) -> None:
    """Skip (or, in CI, fail) when part of the integration stack is missing."""
    if not missing:
        return
    reason = "integration stack unavailable, missing: " + ", ".join(missing)
    required = (
        os.environ.get("CI") == "true"
        or os.environ.get("SAFE_MIGRATE_TESTS_REQUIRE_POSTGRES") == "1"
    )
    if required:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
