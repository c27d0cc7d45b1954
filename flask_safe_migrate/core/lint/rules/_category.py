"""Shared checks of the small-DML category rules."""

from __future__ import annotations

from ...sql import has_dml
from ...steps import Phase
from .. import _ast
from ..context import StatementContext

__all__ = ["applies", "has_where", "kinds_outside"]


def applies(ctx: StatementContext, category: str) -> bool:
    """Whether a DML statement of a schema step declaring *category* is at hand."""
    return (
        ctx.phase is Phase.SCHEMA
        and ctx.step.category == category
        and has_dml(ctx.stmt)
    )


def kinds_outside(ctx: StatementContext, allowed: set[str]) -> list[str]:
    """Return the statement's DML kinds that *allowed* does not contain."""
    return [k for k in ctx.stmt.dml_kinds if k not in allowed]


def has_where(ctx: StatementContext) -> bool:
    """Whether the statement (an UPDATE or DELETE) has a WHERE clause."""
    return getattr(ctx.stmt.node, "whereClause", None) is not None


def is_node(ctx: StatementContext, kind: str) -> bool:
    """Whether the statement itself (not something it embeds) is a *kind* node."""
    return _ast.node_type(ctx.stmt.node) == kind
