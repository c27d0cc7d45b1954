"""Rule enum-value-used-in-same-step: a new enum value used before it commits."""

from __future__ import annotations

import typing as t

from ...sql import Statement
from ...steps import Phase
from .. import _ast
from ..context import StepContext
from ..findings import Severity
from ._rule import Scope

RULE = "enum-value-used-in-same-step"
SEVERITY = Severity.ERROR
SCOPE = Scope.STEP
SUMMARY = (
    "a value added by ALTER TYPE ... ADD VALUE used later in the same schema step "
    "(its transaction)"
)
HINT = (
    "use the new value in a later step: PostgreSQL refuses a new enum value "
    "(unsafe use of new value) until the transaction that added it commits"
)


def check(ctx: StepContext) -> t.Iterator[tuple[Statement | None, str]]:
    """Flag a string literal equal to a value added earlier in the step."""
    if ctx.step.phase is not Phase.SCHEMA:
        return
    added: dict[str, tuple[str, int]] = {}
    for outer in ctx.statements:
        for stmt in (outer, *outer.embedded):
            node = stmt.node
            used = sorted(added.keys() & _literals(node))
            if used:
                value = used[0]
                type_name, line = added[value]
                yield (
                    outer,
                    f"'{value}' is used in the same transaction that added it to "
                    f"{type_name} (ALTER TYPE at line {line}): PostgreSQL refuses "
                    "it until that transaction commits",
                )
            if _ast.node_type(node) == "AlterEnumStmt" and node.oldVal is None:
                names = ".".join(str(n.sval) for n in node.typeName or ())
                added[str(node.newVal)] = (names, outer.line)


def _literals(node: t.Any) -> set[str]:
    return {
        str(n.val.sval)
        for n in _ast.walk(node)
        if _ast.node_type(n) == "A_Const"
        and _ast.node_type(getattr(n, "val", None)) == "String"
    }
