"""Findings of the linter and the verifier, and the report that gathers them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace

__all__ = ["Finding", "LintReport", "Severity", "Source"]


class Severity(enum.Enum):
    """How bad a finding is: an error fails ``check`` and blocks ``run``."""

    ERROR = "error"
    WARNING = "warning"


class Source(enum.Enum):
    """Which checker produced a finding."""

    #: Our own SQL rules (pglast): phases, pooling hazards, categories.
    RULES = "safe-migrate"
    #: squawk's DDL-safety rules.
    SQUAWK = "squawk"
    #: The migration-code verifier (an AST pass over Python modules).
    VERIFIER = "verifier"


@dataclass(frozen=True)
class Finding:
    """One problem found in a step's SQL or in migration code."""

    #: The kebab-case rule id, e.g. ``require-concurrent-index``.
    rule: str
    severity: Severity
    #: What is wrong here, in one sentence.
    message: str
    #: How to fix it, in one sentence.
    hint: str
    source: Source = Source.RULES
    #: The step the SQL belongs to (``None`` for code findings outside a step).
    step_id: str | None = None
    #: The step's phase value (``schema``, ``index``, ``backfill``).
    phase: str | None = None
    #: ``file:line``: the step's registration, the ``execute()`` call that sent
    #: the statement, or the offending Python line.
    location: str | None = None
    #: 1-based line of the statement within the step's SQL (or within the SQL
    #: text of one ``execute()`` call of a function step).
    line: int | None = None
    #: The statement's text (whitespace collapsed).
    statement: str | None = None
    #: The reason given by the inline suppression that silenced it, if any.
    suppressed_reason: str | None = None

    @property
    def is_error(self) -> bool:
        """Whether the finding is error-severity."""
        return self.severity is Severity.ERROR

    def suppressed(self, reason: str) -> Finding:
        """Return a copy marked as suppressed with ``reason``."""
        return replace(self, suppressed_reason=reason)

    def describe(self) -> str:
        """Return the finding as one line: where, rule, message."""
        where = self.location or "?"
        if self.step_id is not None:
            where = f"step {self.step_id} ({where})"
            if self.line is not None:
                where += f", line {self.line} of its SQL"
        return f"{where}: {self.rule}: {self.message}"


@dataclass
class LintReport:
    """What ``check`` (or the run-time lint) found.

    ``findings`` holds the active findings, ``suppressed`` the ones an inline
    ``safe-migrate: ignore`` silenced (with its reason).
    """

    findings: list[Finding] = field(default_factory=list)
    suppressed: list[Finding] = field(default_factory=list)
    #: Number of steps whose SQL was linted.
    steps_checked: int = 0
    #: Python files the verifier read.
    files_checked: list[str] = field(default_factory=list)
    #: Whether squawk ran; ``squawk_note`` says why not, when it did not.
    squawk_ran: bool = False
    squawk_version: str | None = None
    squawk_note: str | None = None

    @property
    def errors(self) -> list[Finding]:
        """The error-severity findings."""
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        """The warning-severity findings."""
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        """Whether there is no error finding (warnings are allowed)."""
        return not self.errors
