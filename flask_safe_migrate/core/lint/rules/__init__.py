"""The lint rules, one module per rule, and their registry.

Each rule module declares ``RULE`` (the kebab-case id), ``SEVERITY``, ``SCOPE``,
a one-line ``SUMMARY``, a fix ``HINT`` and, unless the linter reports it itself,
a ``check`` function (see :class:`Scope` for its signature).
"""

from __future__ import annotations

from . import app_session_in_migration
from . import bare_except_in_step
from . import blocking_table_rewrite
from . import cannot_run_in_transaction
from . import concurrent_index_outside_index_phase
from . import connection_across_retries
from . import ddl_in_backfill_step
from . import dedup_not_delete
from . import dml_in_do_block
from . import dml_needs_category
from . import do_block_swallows_errors
from . import dynamic_sql
from . import enum_value_used_in_same_step
from . import invalid_suppression
from . import non_index_sql_in_index_step
from . import one_time_backfill_not_update
from . import orphan_cleanup_not_delete
from . import require_concurrent_index
from . import seed_not_literal_insert
from . import session_advisory_lock
from . import session_cursor_with_hold
from . import session_listen
from . import session_load
from . import session_prepare
from . import session_setting
from . import session_temp_table
from . import sql_syntax_error
from . import step_not_recordable
from . import transaction_around_retry
from . import transaction_control
from . import unneeded_category
from . import unreadable_file
from . import unused_suppression
from . import volatile_default_rewrite
from ._rule import Rule
from ._rule import Scope
from ._rule import rule_from_module

__all__ = ["RULES", "Rule", "Scope", "get_rule", "rules_of"]

_MODULES = (
    # phase rules
    dml_needs_category,
    dml_in_do_block,
    concurrent_index_outside_index_phase,
    require_concurrent_index,
    non_index_sql_in_index_step,
    ddl_in_backfill_step,
    # transaction-pooling hazards
    session_setting,
    session_advisory_lock,
    session_listen,
    session_prepare,
    session_cursor_with_hold,
    session_temp_table,
    session_load,
    # runner conflicts
    transaction_control,
    cannot_run_in_transaction,
    do_block_swallows_errors,
    enum_value_used_in_same_step,
    # small-DML categories
    seed_not_literal_insert,
    dedup_not_delete,
    orphan_cleanup_not_delete,
    one_time_backfill_not_update,
    unneeded_category,
    # what squawk misses
    volatile_default_rewrite,
    blocking_table_rewrite,
    # the linter's own
    dynamic_sql,
    sql_syntax_error,
    step_not_recordable,
    invalid_suppression,
    unused_suppression,
    unreadable_file,
    # the migration-code verifier
    app_session_in_migration,
    transaction_around_retry,
    connection_across_retries,
    bare_except_in_step,
)

#: Every rule of ours by id, in documentation order.
RULES: dict[str, Rule] = {
    rule.id: rule for rule in (rule_from_module(m) for m in _MODULES)
}


def get_rule(rule_id: str) -> Rule:
    """Return the rule *rule_id*.

    :raises KeyError: no rule of ours has this id.
    """
    return RULES[rule_id]


def rules_of(scope: Scope, disabled: frozenset[str] = frozenset()) -> list[Rule]:
    """Return the enabled rules of *scope*, in documentation order."""
    return [r for r in RULES.values() if r.scope is scope and r.id not in disabled]
