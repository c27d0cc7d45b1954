"""The shape of a lint rule: an id, a severity, a summary, a fix hint, a check."""

from __future__ import annotations

import enum
import types
import typing as t
from dataclasses import dataclass

from ..findings import Severity
from ..findings import Source

__all__ = ["Rule", "Scope", "rule_from_module"]


class Scope(enum.Enum):
    """What a rule's ``check`` looks at."""

    #: ``check(ctx: StatementContext) -> Iterable[str]``: one message per problem.
    STATEMENT = "statement"
    #: ``check(ctx: StepContext) -> Iterable[tuple[Statement | None, str]]``.
    STEP = "step"
    #: ``check(module: ModuleCode) -> Iterable[tuple[int, str]]``: line, message.
    CODE = "code"
    #: No check: the linter itself reports it (syntax, suppressions, recording).
    ENGINE = "engine"


@dataclass(frozen=True)
class Rule:
    """One lint rule, as its module declares it."""

    id: str
    severity: Severity
    summary: str
    hint: str
    scope: Scope
    check: t.Callable[..., t.Iterable[t.Any]] | None = None
    #: A statement rule that also checks each statement a DO block runs. False for
    #: rules that judge the block as a whole (its DML, hazards or dynamic SQL).
    embedded: bool = True

    @property
    def source(self) -> Source:
        """Where its findings come from: our SQL rules or the code verifier."""
        return Source.VERIFIER if self.scope is Scope.CODE else Source.RULES


def rule_from_module(module: types.ModuleType) -> Rule:
    """Build the :class:`Rule` a rule module declares (``RULE``, ``SEVERITY``...)."""
    return Rule(
        id=module.RULE,
        severity=module.SEVERITY,
        summary=module.SUMMARY,
        hint=module.HINT,
        scope=module.SCOPE,
        check=getattr(module, "check", None),
        embedded=getattr(module, "EMBEDDED", True),
    )
