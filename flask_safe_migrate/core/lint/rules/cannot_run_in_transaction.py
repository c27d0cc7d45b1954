"""Rule cannot-run-in-transaction: a statement PostgreSQL refuses in a transaction."""

from __future__ import annotations

import typing as t

from ...steps import Phase
from .. import _ast
from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "cannot-run-in-transaction"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
SUMMARY = (
    "VACUUM, CREATE/DROP DATABASE, ALTER SYSTEM, tablespaces, REINDEX SYSTEM/"
    "DATABASE, CLUSTER of every table or DETACH PARTITION CONCURRENTLY in a step "
    "that runs in a transaction"
)
HINT = (
    "run it outside the migration (a maintenance job or by hand): schema steps, "
    "backfill batches and DO blocks always run inside a transaction block"
)

_NEVER = {
    "AlterSystemStmt": "ALTER SYSTEM",
    "CreatedbStmt": "CREATE DATABASE",
    "CreateSubscriptionStmt": "CREATE SUBSCRIPTION",
    "CreateTableSpaceStmt": "CREATE TABLESPACE",
    "DropSubscriptionStmt": "DROP SUBSCRIPTION",
    "DropTableSpaceStmt": "DROP TABLESPACE",
    "DropdbStmt": "DROP DATABASE",
}
_REINDEX_MANY = {"REINDEX_OBJECT_SYSTEM", "REINDEX_OBJECT_DATABASE"}


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag statements that fail with 'cannot run inside a transaction block'."""
    if ctx.phase is Phase.INDEX and ctx.block is None:
        return  # the index phase runs in autocommit (other rules judge the SQL)
    what = _what(ctx.stmt.node)
    if what:
        where = "a DO block" if ctx.block is not None else f"a {ctx.phase.value} step"
        yield f"{what} cannot run inside a transaction block, as in {where}"


def _what(node: t.Any) -> str | None:
    kind = _ast.node_type(node)
    if kind in _NEVER:
        return _NEVER[kind]
    if kind == "VacuumStmt" and node.is_vacuumcmd:
        return "VACUUM"
    if kind == "ReindexStmt" and _ast.enum_name(node.kind) in _REINDEX_MANY:
        return "REINDEX " + _ast.enum_name(node.kind).rsplit("_", 1)[-1]
    if kind == "ClusterStmt" and node.relation is None:
        return "CLUSTER without a table"
    if kind == "AlterDatabaseStmt" and any(
        getattr(o, "defname", None) == "tablespace" for o in node.options or ()
    ):
        return "ALTER DATABASE ... SET TABLESPACE"
    if kind == "AlterTableStmt" and any(
        _ast.enum_name(cmd.subtype) == "AT_DetachPartition"
        and getattr(cmd.def_, "concurrent", False)
        for cmd in node.cmds or ()
    ):
        return "DETACH PARTITION ... CONCURRENTLY"
    return None
