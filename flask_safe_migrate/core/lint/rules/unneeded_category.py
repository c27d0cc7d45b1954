"""Rule unneeded-category: a declared category on a step without DML."""

from __future__ import annotations

import typing as t

from ...sql import Statement
from ...sql import has_dml
from ...steps import Phase
from ..context import StepContext
from ..findings import Severity
from ._rule import Scope

RULE = "unneeded-category"
SEVERITY = Severity.WARNING
SCOPE = Scope.STEP
SUMMARY = "a small-DML category declared on a step that has no DML"
HINT = (
    "remove category=: without it, DML added to the step later is refused instead "
    "of silently allowed"
)


def check(ctx: StepContext) -> t.Iterator[tuple[Statement | None, str]]:
    """Flag a schema step whose category allows DML it does not have."""
    step = ctx.step
    if step.phase is not Phase.SCHEMA or step.category is None or not ctx.complete:
        return
    if not any(has_dml(stmt) for stmt in ctx.statements):
        yield None, f"category={step.category!r} but the step has no DML"
