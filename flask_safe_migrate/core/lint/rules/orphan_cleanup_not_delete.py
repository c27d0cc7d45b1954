"""Rule orphan-cleanup-not-delete: an ``orphan_cleanup`` removes dangling rows."""

from __future__ import annotations

import typing as t

from .. import _ast
from ..context import StatementContext
from ..findings import Severity
from . import _category
from ._rule import Scope

RULE = "orphan-cleanup-not-delete"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
#: Judges a DO block as a whole, not each statement it runs.
EMBEDDED = False
SUMMARY = (
    "DML declared as orphan_cleanup that is not a filtered DELETE (or an UPDATE "
    "setting references to NULL)"
)
HINT = (
    "delete the rows whose reference is gone (DELETE ... WHERE NOT EXISTS ...), "
    "or set that reference to NULL; other changes belong in a backfill step"
)


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag other DML, unfiltered deletes, and UPDATEs setting non-NULL values."""
    if not _category.applies(ctx, "orphan_cleanup"):
        return
    other = _category.kinds_outside(ctx, {"delete", "update"})
    if other:
        yield (
            f"{'/'.join(k.upper() for k in other)} in an orphan_cleanup step, which "
            "may only delete orphans or clear their reference"
        )
        return
    node = ctx.stmt.node
    kind = _ast.node_type(node)
    if kind in {"DeleteStmt", "UpdateStmt"} and not _category.has_where(ctx):
        yield f"the {kind[:-4].upper()} has no WHERE clause: it touches every row"
    elif kind == "UpdateStmt" and not all(
        _is_null(target.val) for target in node.targetList or ()
    ):
        yield "the UPDATE sets values other than NULL: that is a backfill"


def _is_null(value: t.Any) -> bool:
    while _ast.node_type(value) == "TypeCast":
        value = value.arg
    return _ast.node_type(value) == "A_Const" and bool(value.isnull)
