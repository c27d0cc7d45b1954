"""Rule blocking-table-rewrite: a rewrite of a live table under ACCESS EXCLUSIVE."""

from __future__ import annotations

import typing as t

from ...steps import Phase
from .. import _ast
from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "blocking-table-rewrite"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
SUMMARY = (
    "CLUSTER, REFRESH MATERIALIZED VIEW without CONCURRENTLY, or ALTER TABLE SET "
    "TABLESPACE / LOGGED / UNLOGGED / ACCESS METHOD rewrites a live table and "
    "blocks reads and writes until done"
)
HINT = (
    "for a materialized view with a unique index use REFRESH MATERIALIZED VIEW "
    "CONCURRENTLY; otherwise run the rewrite in a maintenance window (or with "
    "pg_repack), not in a migration step"
)

_REWRITING_COMMANDS = {
    "AT_SetAccessMethod": "SET ACCESS METHOD",
    "AT_SetLogged": "SET LOGGED",
    "AT_SetTableSpace": "SET TABLESPACE",
    "AT_SetUnLogged": "SET UNLOGGED",
}


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag statements that rewrite an existing table under ACCESS EXCLUSIVE."""
    if ctx.phase is Phase.INDEX and ctx.block is None:
        return  # non-index-sql-in-index-step reports it
    if ctx.targets_new_table:
        return
    what = _what(ctx.stmt.node)
    if what:
        target = ctx.stmt.relations[0] if ctx.stmt.relations else "the table"
        yield (
            f"{what} rewrites {target} under an ACCESS EXCLUSIVE lock: reads and "
            "writes wait until it finishes"
        )


def _what(node: t.Any) -> str | None:
    kind = _ast.node_type(node)
    if kind == "ClusterStmt" and node.relation is not None:
        return "CLUSTER"
    if kind == "VacuumStmt" and node.is_vacuumcmd:
        return None  # cannot-run-in-transaction reports it
    if kind == "RefreshMatViewStmt" and not node.concurrent and not node.skipData:
        return "REFRESH MATERIALIZED VIEW"
    if kind == "AlterTableStmt":
        for cmd in node.cmds or ():
            found = _REWRITING_COMMANDS.get(_ast.enum_name(cmd.subtype))
            if found:
                return f"ALTER TABLE ... {found}"
    return None
