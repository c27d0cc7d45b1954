"""Rule require-concurrent-index: a blocking index build on an existing table."""

from __future__ import annotations

import typing as t

from ... import revisions
from ...steps import Phase
from .. import _ast
from ..context import StatementContext
from ..findings import Severity
from ._rule import Scope

RULE = "require-concurrent-index"
SEVERITY = Severity.ERROR
SCOPE = Scope.STATEMENT
SUMMARY = "CREATE INDEX or REINDEX without CONCURRENTLY on an existing table"
HINT = (
    "build it with migrate.index(...), which uses CREATE INDEX CONCURRENTLY; or "
    "create the index in the same step as its table"
)


def check(ctx: StatementContext) -> t.Iterator[str]:
    """Flag a non-concurrent build on a table not created earlier in the step."""
    kind = _ast.node_type(ctx.stmt.node)
    if ctx.stmt.concurrent or kind not in {"IndexStmt", "ReindexStmt"}:
        return
    if ctx.phase not in {Phase.SCHEMA, Phase.INDEX} or ctx.targets_new_table:
        return
    target = ctx.stmt.relations[0] if ctx.stmt.relations else "the table"
    verb = "CREATE INDEX" if kind == "IndexStmt" else "REINDEX"
    yield (
        f"{verb} without CONCURRENTLY on {target} blocks every write to it for the "
        "whole build" + _revision_rewrite(ctx, target)
    )


def _revision_rewrite(ctx: StatementContext, table: str) -> str:
    """For an Alembic revision, the ``migrate.index(...)`` that replaces the build."""
    node = ctx.stmt.node
    if not revisions.is_revision(ctx.step) or _ast.node_type(node) != "IndexStmt":
        return ""
    columns = [str(getattr(p, "name", None) or "") for p in node.indexParams or ()]
    if not node.idxname or node.whereClause or not all(columns):
        return ""
    rewrite = revisions.index_rewrite(
        ctx.step,
        table=table,
        columns=columns,
        unique=bool(node.unique),
        name=node.idxname,
    )
    return f"; {rewrite}"
