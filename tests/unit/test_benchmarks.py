"""The benchmark suite's judgement, without a database: state checker, errors, table."""

from __future__ import annotations

import dataclasses

from benchmarks import expected
from benchmarks import report
from benchmarks.chaos_soak import error_line
from benchmarks.chaos_soak import errors_by_tool
from benchmarks.chaos_soak import normalize_error
from benchmarks.chaos_soak import summarize

INDEX = (
    "CREATE UNIQUE INDEX messages_provider_msg_id_key ON public.messages "
    "USING btree (provider_msg_id) WHERE (provider_msg_id IS NOT NULL)"
)
SEED_AUDIT = (
    ("leads", "INSERT", 1, "ada@example.com", None, None),
    ("leads", "INSERT", 2, "alan@example.com", None, None),
    ("messages", "INSERT", 1, None, "msg-1", None),
    ("messages", "INSERT", 2, None, "msg-1", None),
    ("messages", "INSERT", 3, None, "msg-2", None),
    ("messages", "INSERT", 4, None, "msg-orphan", None),
    ("messages", "DELETE", 4, None, "msg-orphan", None),
    ("messages", "DELETE", 2, None, "msg-1", None),
    ("leads", "UPDATE", 1, "ada@example.com", None, None),
    ("leads", "UPDATE", 2, "alan@example.com", None, None),
)
DONE = expected.Snapshot(
    tables=frozenset({"leads", "messages"}),
    columns=expected.EXPECTED_COLUMNS,
    leads=(
        (1, "Ada Lovelace", "ada@example.com", 1),
        (2, "Alan Turing", "alan@example.com", 2),
    ),
    messages=((1, 1, "msg-1"), (3, 2, "msg-2")),
    indexes=((True, True, INDEX),),
    audit=SEED_AUDIT,
)


def test_the_expected_end_state_is_recognised() -> None:
    verdict = expected.classify(DONE)
    assert verdict == expected.Verdict("expected")


def test_no_tables_is_the_initial_state_even_with_a_ledger() -> None:
    verdict = expected.classify(expected.Snapshot(frozenset(), frozenset()))
    assert verdict.state == "initial"
    assert not verdict.problems


def test_a_missing_backfill_and_a_missing_index_are_half_applied() -> None:
    snap = dataclasses.replace(
        DONE,
        leads=(
            (1, "Ada Lovelace", "ada@example.com", None),
            (2, "Alan Turing", "alan@example.com", None),
        ),
        indexes=(),
    )
    verdict = expected.classify(snap)
    assert verdict.state == "half"
    assert verdict.problems == (
        "order_index != id for lead ids [1, 2]",
        "no valid unique index on messages(provider_msg_id)",
    )


def test_an_invalid_index_left_by_an_interrupted_build_is_half_applied() -> None:
    snap = dataclasses.replace(DONE, indexes=((True, False, INDEX),))
    verdict = expected.classify(snap)
    assert verdict.state == "half"
    assert verdict.problems[0] == "no valid unique index on messages(provider_msg_id)"
    assert verdict.problems[1].startswith("INVALID index left behind")


def test_a_missing_column_and_kept_duplicate_are_reported() -> None:
    snap = dataclasses.replace(
        DONE,
        columns=expected.EXPECTED_COLUMNS - {("leads", "order_index", "bigint")},
        messages=((2, 1, "msg-1"), (3, 2, "msg-2")),
    )
    verdict = expected.classify(snap)
    assert verdict.state == "half"
    assert "missing columns: leads.order_index bigint" in verdict.problems
    assert "dedup kept msg-1 id [2], not min(id) 1" in verdict.problems


def test_a_second_seed_and_a_second_backfill_update_count_as_applied_twice() -> None:
    again = (
        ("leads", "INSERT", 5, "ada@example.com", None, None),
        ("leads", "UPDATE", 1, "ada@example.com", None, 1),
    )
    verdict = expected.classify(dataclasses.replace(DONE, audit=SEED_AUDIT + again))
    # The final rows can look right while a step ran twice: the audit log tells.
    assert verdict.state == "expected"
    assert verdict.applied_twice == (
        "seed inserted lead ada@example.com 2 times",
        "lead 1 updated 2 times by the backfill",
    )


def test_the_error_line_of_a_crashed_boot_is_the_exception_not_the_footer() -> None:
    stderr = """Traceback (most recent call last):
  File "x.py", line 3, in <module>
sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) SSL SYSCALL error: EOF
[SQL: ALTER TABLE leads ADD COLUMN order_index bigint]
(Background on this error at: https://sqlalche.me/e/21/e3q8)
"""
    line = error_line(stderr)
    assert line.startswith("sqlalchemy.exc.OperationalError: (psycopg2.")
    assert normalize_error('relation "x" in line 12 [SQL: SELECT 1]') == (
        'relation "x" in line N'
    )


def test_the_soak_table_counts_outcomes_per_tool() -> None:
    runs = [
        {
            "tool": "naive",
            "boots": [{"exit": 1, "error": "E: 1 fail"}, {"exit": 0, "error": ""}],
            "completed": True,
            "first_boot_ok": False,
            "state": "expected",
            "applied_twice": [],
            "kills": 2,
            "dropped_commits": 1,
            "seconds": 3.0,
            "problems": [],
            "run": 0,
        },
        {
            "tool": "naive",
            "boots": [{"exit": 1, "error": "E: 2 fail"}],
            "completed": False,
            "first_boot_ok": False,
            "state": "half",
            "applied_twice": ["seed inserted lead a 2 times"],
            "kills": 1,
            "dropped_commits": 1,
            "seconds": 1.0,
            "problems": ["table messages is missing"],
            "run": 1,
        },
    ]
    (row,) = summarize(runs, ["naive"])
    assert (row["completed"], row["half_applied"], row["applied_twice_runs"]) == (
        1,
        1,
        1,
    )
    errors = errors_by_tool(runs, ["naive"])
    assert errors == {"naive": {"E: N fail": 2}}
    results = {
        "command": "bash benchmarks/run.sh",
        "started_at": "2026-01-01 00:00 UTC",
        "total_seconds": 60.0,
        "quick": False,
        "latency_ms_each_way": 5.0,
        "versions": dict.fromkeys(
            [
                "PostgreSQL",
                "PgBouncer",
                "Python",
                "SQLAlchemy",
                "Alembic",
                "Flask-Migrate",
                "flask-safe-migrate",
            ],
            "1",
        ),
        "sizes": {"soak_runs": 2, "chaos_seconds": [0.1, 0.8], "soak_max_boots": 3},
        "soak": {
            "calibration": {},
            "runs": runs,
            "summary": [row],
            "errors": errors,
        },
    }
    text = report.render_markdown(results)
    assert "| naive (commit per statement) | 2 | 1/2 | 0/2 | 1 | 1 | 0 | 1 |" in text
    assert "- naive (commit per statement), run 1: table messages is missing" in text
    assert report.ratio(30.0, 1.5) == "20\N{MULTIPLICATION SIGN}"
