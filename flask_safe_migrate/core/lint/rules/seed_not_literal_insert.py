"""Rule seed-not-literal-insert: a ``seed`` step inserts a few literal rows."""

from __future__ import annotations

import typing as t

from .. import _ast
from ..context import StatementContext
from ..findings import Severity
from . import _category
from ._rule import Scope

RULE = "seed-not-literal-insert"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = "DML declared as seed that is not a small INSERT of literal rows"
HINT = (
    "a seed inserts a handful of literal rows (VALUES, or a SELECT driven by a "
    "VALUES list); copy or generate data in a backfill step"
)

#: More literal rows than this in one statement is not "a handful".
MAX_ROWS = 1000


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag UPDATE/DELETE, and INSERTs whose rows come from tables or functions."""
    if not _category.applies(ctx, "seed"):
        return
    other = _category.kinds_outside(ctx, {"insert"})
    if other:
        yield (
            f"{'/'.join(k.upper() for k in other)} in a seed step, which may only "
            "insert rows"
        )
        return
    if not _category.is_node(ctx, "InsertStmt"):
        return  # an INSERT inside a CTE or DO block: its shape is not checked
    source = ctx.stmt.node.selectStmt
    rows = _literal_rows(source)
    if rows is None:
        yield (
            "the INSERT takes its rows from a table or a set-returning function, "
            "so their number is not bounded by the step's text"
        )
    elif rows > MAX_ROWS:
        yield f"the INSERT has {rows} literal rows, more than a seed's {MAX_ROWS}"


def _literal_rows(select: t.Any) -> int | None:
    """Return how many literal rows drive *select*, or None if not literal."""
    if select is None:
        return 1  # DEFAULT VALUES
    if _ast.node_type(select) != "SelectStmt":
        return None
    if select.valuesLists:
        return len(select.valuesLists)
    if _ast.enum_name(select.op) != "SETOP_NONE":
        left, right = _literal_rows(select.larg), _literal_rows(select.rarg)
        return None if left is None or right is None else left + right
    if _has_set_function(select.targetList):
        return None
    if not select.fromClause:
        return 1  # SELECT <literals> [WHERE NOT EXISTS (...)]
    values = [
        _literal_rows(item.subquery)
        for item in _from_items(select.fromClause)
        if _ast.node_type(item) == "RangeSubselect"
    ]
    literal = [v for v in values if v is not None]
    # Lookups joined to a VALUES list (e.g. to find ids by e-mail) stay bounded.
    return sum(literal) if literal else None


def _from_items(items: t.Any) -> t.Iterator[t.Any]:
    for item in items or ():
        if _ast.node_type(item) == "JoinExpr":
            yield from _from_items((item.larg, item.rarg))
        else:
            yield item


_SET_FUNCTIONS = {"generate_series", "unnest", "jsonb_array_elements", "json_each"}


def _has_set_function(target_list: t.Any) -> bool:
    return any(
        _ast.node_type(node) == "FuncCall" and _ast.func_name(node) in _SET_FUNCTIONS
        for node in _ast.walk(target_list)
    )
