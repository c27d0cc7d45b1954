"""Rule volatile-default-rewrite: ADD COLUMN that fills every row one by one."""

from __future__ import annotations

import typing as t

from .. import _ast
from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "volatile-default-rewrite"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
SUMMARY = (
    "ADD COLUMN with a volatile default (serial, identity, random(), "
    "gen_random_uuid(), clock_timestamp(), a stored generated column) rewrites "
    "the table"
)
HINT = (
    "add the column without a default, then ALTER COLUMN ... SET DEFAULT for new "
    "rows, and fill existing rows in a backfill step"
)

_SERIAL_TYPES = {"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"}

#: Built-in volatile functions that are common in column defaults.
_VOLATILE = {
    "clock_timestamp",
    "gen_random_uuid",
    "nextval",
    "random",
    "timeofday",
    "txid_current",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
}


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag each ADD COLUMN whose value must be computed row by row."""
    node = ctx.stmt.node
    if _ast.node_type(node) != "AlterTableStmt" or ctx.targets_new_table:
        return
    table = _ast.relation_name(node.relation)
    for cmd in node.cmds or ():
        if _ast.enum_name(cmd.subtype) != "AT_AddColumn":
            continue
        column = cmd.def_
        reason = _rewrite_reason(column)
        if reason:
            yield (
                f"ADD COLUMN {column.colname} {reason}: PostgreSQL rewrites all of "
                f"{table} under an ACCESS EXCLUSIVE lock"
            )


def _rewrite_reason(column: t.Any) -> str | None:
    type_name = _ast.type_name(column)
    if type_name in _SERIAL_TYPES:
        return f"{type_name} (a sequence default)"
    for constraint in _ast.constraints_of(column):
        kind = _ast.enum_name(constraint.contype)
        if kind == "CONSTR_IDENTITY":
            return "GENERATED ... AS IDENTITY"
        if kind == "CONSTR_GENERATED":
            return "GENERATED ALWAYS AS (...) STORED"
        if kind == "CONSTR_DEFAULT":
            calls = [
                _ast.func_name(n)
                for n in _ast.walk(constraint.raw_expr)
                if _ast.node_type(n) == "FuncCall"
            ]
            volatile = [c for c in calls if c in _VOLATILE]
            if volatile:
                return f"DEFAULT {volatile[0]}() (volatile)"
    return None
