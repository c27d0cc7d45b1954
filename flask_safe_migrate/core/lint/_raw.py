"""A finding before suppressions, with the step, piece and statement it points at."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from dataclasses import replace

from ..sql import Statement
from .collect import CollectedStep
from .collect import Piece
from .findings import Finding
from .findings import Severity
from .findings import Source
from .rules import Rule

__all__ = ["RawFinding", "raw_finding", "shorten", "with_changes"]

#: Statements longer than this are cut in findings.
_STATEMENT_WIDTH = 200


@dataclass
class RawFinding:
    """A finding before suppressions, with where it points."""

    finding: Finding
    collected: CollectedStep
    piece: Piece | None = None
    stmt: Statement | None = None
    #: The statement of a DO block the finding is about (``stmt`` is the block).
    inner: Statement | None = None


def raw_finding(
    rule: Rule,
    item: CollectedStep,
    piece: Piece | None,
    stmt: Statement | None,
    message: str,
    *,
    severity: Severity | None = None,
    hint: str | None = None,
    source: Source = Source.RULES,
    line: int | None = None,
) -> RawFinding:
    """Build the finding of *rule* on *stmt* (or the step) of *item*."""
    finding = Finding(
        rule=rule.id,
        severity=severity or rule.severity,
        message=message,
        hint=hint if hint is not None else rule.hint,
        source=source,
        step_id=item.step.id,
        phase=item.step.phase.value,
        location=piece.location if piece is not None else item.step.location,
        line=line if line is not None else (stmt.line if stmt is not None else None),
        statement=shorten(stmt.sql) if stmt is not None else None,
    )
    return RawFinding(finding=finding, collected=item, piece=piece, stmt=stmt)


def with_changes(finding: Finding, **changes: t.Any) -> Finding:
    """A copy of *finding* with *changes*."""
    return replace(finding, **changes)


def shorten(sql: str | None) -> str | None:
    """*sql* on one line, cut to a readable width."""
    if sql is None:
        return None
    text = " ".join(sql.split())
    if len(text) <= _STATEMENT_WIDTH:
        return text
    return text[: _STATEMENT_WIDTH - 3] + "..."
