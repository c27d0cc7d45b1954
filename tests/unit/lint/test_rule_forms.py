"""Each rule fires on its dangerous form and stays quiet on its safe form.

One test per rule fails if the rule stops firing, one if it fires on the safe
form. SQL rules use corpus cases (dangerous, safe); the verifier's rules use the
fixture modules; the linter's own rules build their case here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flask_safe_migrate.core.lint import RULES
from flask_safe_migrate.core.lint import lint_steps
from flask_safe_migrate.core.lint.rules import Scope
from flask_safe_migrate.core.lint.verify import verify_files
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import Step
from flask_safe_migrate.core.steps import StepHandle

from .score import CASES
from .score import corpus_report
from .score import found

#: rule id -> (corpus case of its dangerous form, corpus case of its safe form).
SQL_FORMS = {
    "dml-needs-category": ("update_without_category", "one_time_backfill_update"),
    "dml-in-do-block": ("do_update_default_plan", "do_insert_seed_category"),
    "concurrent-index-outside-index-phase": (
        "create_index_concurrently_in_schema_step",
        "create_index_concurrently_in_index_step",
    ),
    "require-concurrent-index": (
        "create_index_blocking",
        "create_table_then_index_same_step",
    ),
    "non-index-sql-in-index-step": (
        "alter_table_in_index_step",
        "analyze_in_index_step",
    ),
    "ddl-in-backfill-step": ("backfill_with_ddl", "backfill_batch_template"),
    "session-setting": ("set_search_path_session", "set_local_search_path"),
    "session-advisory-lock": ("session_advisory_lock", "xact_advisory_lock"),
    "session-listen": ("listen", "notify_channel"),
    "session-prepare": ("prepare", "create_function_with_update"),
    "session-cursor-with-hold": ("declare_with_hold", "declare_cursor_without_hold"),
    "session-temp-table": ("temp_table", "temp_table_on_commit_drop"),
    "session-load": ("load", "create_extension"),
    "transaction-control": ("explicit_transaction", "set_transaction_isolation"),
    "cannot-run-in-transaction": ("vacuum_in_schema_step", "vacuum_in_index_step"),
    "do-block-swallows-errors": (
        "do_when_others_null",
        "do_when_duplicate_column_guard",
    ),
    "enum-value-used-in-same-step": (
        "enum_value_added_then_default",
        "enum_value_added_other_value_used",
    ),
    "seed-not-literal-insert": ("seed_copying_a_table", "seed_values"),
    "dedup-not-delete": ("dedup_update", "dedup_delete_using"),
    "orphan-cleanup-not-delete": (
        "orphan_cleanup_update_values",
        "orphan_cleanup_delete",
    ),
    "one-time-backfill-not-update": (
        "one_time_backfill_delete",
        "one_time_backfill_update",
    ),
    "unneeded-category": ("category_without_dml", "seed_values"),
    "volatile-default-rewrite": (
        "add_column_uuid_default",
        "add_column_then_set_default_safe",
    ),
    "blocking-table-rewrite": (
        "refresh_materialized_view",
        "refresh_materialized_view_concurrently",
    ),
    "dynamic-sql": ("do_block_dynamic", "do_execute_literal_add_nullable_column"),
    "sql-syntax-error": ("syntax_error", "create_table"),
    "invalid-suppression": ("suppression_of_unknown_rule", "suppressed_with_reason"),
    "unused-suppression": ("unused_suppression", "suppressed_with_reason"),
}

FIXTURES = Path(__file__).parent / "fixtures"

#: verifier rule id -> fixture module holding its dangerous forms.
CODE_FORMS = {
    "app-session-in-migration": "app_session.py",
    "transaction-around-retry": "transaction_around_retry.py",
    "connection-across-retries": "connection_reuse.py",
    "bare-except-in-step": "bare_except.py",
}

_BY_ID = {case.id: case for case in CASES}


def test_every_rule_has_its_forms() -> None:
    """Every rule of ours is covered by a dangerous and a safe form below."""
    special = {"step-not-recordable", "unreadable-file"}
    assert set(SQL_FORMS) | set(CODE_FORMS) | special == set(RULES)
    assert {r for r in RULES if RULES[r].scope is Scope.CODE} == set(CODE_FORMS)


@pytest.mark.parametrize("rule", sorted(SQL_FORMS))
def test_sql_rule_fires_on_dangerous_form(rule: str) -> None:
    """The rule reports its dangerous form."""
    case = _BY_ID[SQL_FORMS[rule][0]]
    assert rule in found(corpus_report(squawk=False), case)


@pytest.mark.parametrize("rule", sorted(SQL_FORMS))
def test_sql_rule_quiet_on_safe_form(rule: str) -> None:
    """The rule does not report its safe form."""
    case = _BY_ID[SQL_FORMS[rule][1]]
    assert rule not in found(corpus_report(squawk=False), case)


@pytest.mark.parametrize("rule", sorted(CODE_FORMS))
def test_code_rule_fires_on_dangerous_form(rule: str) -> None:
    """The verifier rule reports its fixture module."""
    active, _ = verify_files([str(FIXTURES / CODE_FORMS[rule])])
    assert rule in {f.rule for f in active}


@pytest.mark.parametrize("rule", sorted(CODE_FORMS))
def test_code_rule_quiet_on_safe_form(rule: str) -> None:
    """The verifier rule does not report correct migration code."""
    active, _ = verify_files([str(FIXTURES / "clean.py")])
    assert rule not in {f.rule for f in active}


def _function_step(fail: bool) -> Step:
    def step(handle: StepHandle) -> None:
        handle.execute("ALTER TABLE accounts ADD COLUMN plan text")
        if fail:
            raise LookupError("settings not loaded")

    return Step(
        id="0001_fn",
        phase=Phase.SCHEMA,
        text_checksum="",
        location="steps.py:1",
        fn=step,
    )


@pytest.mark.parametrize(("fail", "fires"), [(True, True), (False, False)])
def test_step_not_recordable(fail: bool, fires: bool) -> None:
    """A function step that raises while recorded is reported; one that runs is not."""
    report = lint_steps([_function_step(fail)], squawk=False)
    assert ("step-not-recordable" in {f.rule for f in report.findings}) is fires


@pytest.mark.parametrize(
    ("text", "fires"), [("def broken(:\n", True), ("def fine():\n    pass\n", False)]
)
def test_unreadable_file(tmp_path: Path, text: str, fires: bool) -> None:
    """A Python file that does not parse is reported; one that parses is not."""
    path = tmp_path / "steps.py"
    path.write_text(text)
    active, _ = verify_files([str(path)])
    assert ("unreadable-file" in {f.rule for f in active}) is fires
