"""What a lint rule sees: one statement, or one step, with what came before it."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from ..sql import Statement
from ..steps import Phase
from ..steps import Step
from . import _ast

__all__ = ["StatementContext", "StepContext", "created_relations", "qualified"]


@dataclass(frozen=True)
class StatementContext:
    """One statement of a step, for a statement rule."""

    step: Step
    stmt: Statement
    #: Tables created by the step's earlier statements: they have no readers yet
    #: (schema-qualified, ``public`` when written without a schema).
    created: frozenset[str]
    #: The DO block that runs this statement, or None for a top-level statement.
    block: Statement | None = None

    @property
    def phase(self) -> Phase:
        """The step's phase."""
        return self.step.phase

    def is_new(self, relation: str) -> bool:
        """Return whether *relation* was created earlier in the same step."""
        return qualified(relation) in self.created

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
    """Return the tables *stmt* creates (CREATE TABLE, CREATE TABLE AS, SELECT INTO).

    Names are schema-qualified (``public`` when written without a schema) and keep
    the case the parser gives them: ``"T"`` stays ``T``, ``t`` and ``T`` fold to ``t``.
    """
    node = stmt.node
    kind = _ast.node_type(node)
    if kind == "CreateStmt":
        rel = node.relation
    elif kind == "CreateTableAsStmt":
        rel = getattr(node.into, "rel", None)
    elif kind == "SelectStmt" and getattr(node, "intoClause", None) is not None:
        rel = node.intoClause.rel
    else:
        return set()
    return {qualified(_ast.dotted_name(rel))}


def qualified(relation: str) -> str:
    """``schema.table`` for a relation as :attr:`Statement.relations` names it.

    A name without a schema is taken to be in ``public``, the default search path;
    a catalog (database) prefix is dropped.
    """
    parts = relation.split(".")
    return ".".join(parts[-2:]) if len(parts) > 1 else f"public.{relation}"


def statement_contexts(
    step: Step, statements: t.Sequence[Statement]
) -> t.Iterator[StatementContext]:
    """Yield a context per statement and per statement a DO block runs (after the
    block), tracking the tables created so far."""
    created: set[str] = set()
    for stmt in statements:
        yield StatementContext(step=step, stmt=stmt, created=frozenset(created))
        for inner in stmt.embedded:
            yield StatementContext(
                step=step, stmt=inner, created=frozenset(created), block=stmt
            )
            created |= created_relations(inner)
        created |= created_relations(stmt)
