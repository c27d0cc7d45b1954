"""What a lint rule sees: one statement, or one step, with what came before it."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from ..sql import Statement
from ..steps import Phase
from ..steps import Step
from . import _ast

__all__ = ["StatementContext", "StepContext", "created_relations"]


@dataclass(frozen=True)
class StatementContext:
    """One statement of a step, for a statement rule."""

    step: Step
    stmt: Statement
    #: Tables created by the step's earlier statements: they have no readers yet.
    created: frozenset[str]

    @property
    def phase(self) -> Phase:
        """The step's phase."""
        return self.step.phase

    def is_new(self, relation: str) -> bool:
        """Return whether *relation* was created earlier in the same step."""
        return _base(relation) in self.created

    @property
    def targets_new_table(self) -> bool:
        """Whether the statement's first target was created earlier in the step."""
        return bool(self.stmt.relations) and self.is_new(self.stmt.relations[0])


@dataclass(frozen=True)
class StepContext:
    """All the statements of a step, for a step rule."""

    step: Step
    statements: tuple[Statement, ...]
    #: False when some of the step's SQL could not be collected or parsed.
    complete: bool = True


def created_relations(stmt: Statement) -> set[str]:
    """Return the tables *stmt* creates (CREATE TABLE, CREATE TABLE AS, SELECT INTO)."""
    node = stmt.node
    kind = _ast.node_type(node)
    if kind == "CreateStmt":
        return {_ast.relation_name(node.relation)}
    if kind == "CreateTableAsStmt":
        return {_ast.relation_name(getattr(node.into, "rel", None))}
    if kind == "SelectStmt" and getattr(node, "intoClause", None) is not None:
        return {_ast.relation_name(node.intoClause.rel)}
    return set()


def _base(relation: str) -> str:
    return relation.rsplit(".", 1)[-1]


def statement_contexts(
    step: Step, statements: t.Sequence[Statement]
) -> t.Iterator[StatementContext]:
    """Yield a context per statement, tracking the tables created so far."""
    created: set[str] = set()
    for stmt in statements:
        yield StatementContext(step=step, stmt=stmt, created=frozenset(created))
        created |= created_relations(stmt)
