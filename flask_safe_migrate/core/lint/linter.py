"""Lint steps: our rules on each statement, squawk's on the SQL, then suppressions."""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass
from dataclasses import field

from ..sql import Statement
from ..steps import Phase
from ..steps import Step
from ._raw import RawFinding
from ._raw import raw_finding
from ._raw import shorten
from ._raw import with_changes
from ._squawk_findings import run_squawk_on
from ._squawk_findings import squawk_findings
from .collect import CollectedStep
from .collect import Piece
from .collect import collect_step
from .collect import display_path
from .context import StepContext
from .context import statement_contexts
from .findings import Finding
from .findings import LintReport
from .findings import Source
from .rules import RULES
from .rules import Rule
from .rules import Scope
from .rules import rules_of
from .squawk import KNOWN_RULES
from .squawk import SquawkError
from .squawk import find_squawk
from .squawk import squawk_version
from .suppress import Suppression
from .suppress import python_suppressions
from .suppress import sql_suppressions

__all__ = ["lint_sql", "lint_steps", "run_time_findings"]

logger = logging.getLogger(__name__)


@dataclass
class _Suppressions:
    """The suppressions that may apply to one piece of SQL."""

    sql: list[Suppression] = field(default_factory=list)
    python: list[Suppression] = field(default_factory=list)


def lint_steps(
    steps: t.Sequence[Step],
    *,
    disabled: t.Iterable[str] = (),
    squawk: bool = True,
    record_functions: bool = True,
    parsed: t.Mapping[str, list[Statement]] | None = None,
) -> LintReport:
    """Lint the SQL of *steps* and return the report.

    :param disabled: rule ids (ours or squawk's) to skip.
    :param squawk: also run squawk's DDL-safety rules, when squawk is installed.
    :param record_functions: record what function steps send (by running them on
        a recording handle); when False, only SQL steps are linted.
    :param parsed: statements already split, by step id, to avoid parsing again.
    """
    off = frozenset(disabled)
    report = LintReport()
    collected = []
    for step in steps:
        if step.sql is None and not record_functions:
            continue
        if step.sql is not None and parsed is not None and step.id in parsed:
            piece = Piece(sql=step.sql, location=step.location)
            piece.statements = list(parsed[step.id])
            collected.append(CollectedStep(step=step, pieces=[piece]))
        else:
            collected.append(collect_step(step))
    report.steps_checked = len(collected)
    raws: list[RawFinding] = []
    for item in collected:
        raws += _our_findings(item, off)
    if squawk:
        binary = find_squawk()
        if binary is None:
            report.squawk_note = (
                "squawk is not installed (pip install 'flask-safe-migrate[lint]'); "
                "ran our rules only"
            )
        else:
            try:
                violations = run_squawk_on(binary, collected, off)
            except SquawkError as exc:
                report.squawk_note = f"{exc}; ran our rules only"
            else:
                report.squawk_ran = True
                report.squawk_version = squawk_version(binary)
                raws += squawk_findings(collected, violations, raws, off)
    kept = [r for r in raws if r.finding.rule not in off]
    printed = {r.finding.rule for r in raws if r.finding.source is Source.SQUAWK}
    active, suppressed = _apply_suppressions(
        collected, kept, off, report.squawk_ran, printed
    )
    report.findings = active
    report.suppressed = suppressed
    return report


def lint_sql(
    sql: str,
    *,
    phase: Phase | str = Phase.SCHEMA,
    category: str | None = None,
    disabled: t.Iterable[str] = (),
    squawk: bool = False,
) -> list[Finding]:
    """Lint one SQL text as if it were a step of *phase* declaring *category*.

    :returns: the active findings (suppressed ones left out).
    """
    step = Step(
        id="sql",
        phase=Phase.parse(phase),
        text_checksum="",
        location="<sql>",
        sql=sql,
        category=category,
    )
    return lint_steps([step], disabled=disabled, squawk=squawk).findings


def run_time_findings(
    steps: t.Sequence[Step],
    *,
    disabled: t.Iterable[str] = (),
    parsed: t.Mapping[str, list[Statement]] | None = None,
) -> list[Finding]:
    """Return the error findings that block ``run``: our rules, SQL steps only.

    No subprocess and no function step is run: this is on the boot path.
    """
    report = lint_steps(
        steps,
        disabled=disabled,
        squawk=False,
        record_functions=False,
        parsed=parsed,
    )
    return report.errors


# -- our rules -----------------------------------------------------------------------


def _our_findings(item: CollectedStep, off: frozenset[str]) -> list[RawFinding]:
    raws: list[RawFinding] = []
    step = item.step
    if item.record_error is not None:
        raws.append(
            raw_finding(
                RULES["step-not-recordable"],
                item,
                None,
                None,
                f"recording the step's function stopped: {item.record_error}",
            )
        )
    for piece in item.pieces:
        error = piece.syntax_error
        if error is not None:
            raw = raw_finding(
                RULES["sql-syntax-error"], item, piece, None, error.message
            )
            raw.finding = with_changes(
                raw.finding, line=error.line, statement=error.statement
            )
            raws.append(raw)
    pairs = [(piece, stmt) for piece in item.pieces for stmt in piece.statements]
    owner = {id(stmt): piece for piece, stmt in pairs}
    statement_rules = rules_of(Scope.STATEMENT, off)
    embedded_rules = [r for r in statement_rules if r.embedded]
    for ctx in statement_contexts(step, [stmt for _, stmt in pairs]):
        outer = ctx.block or ctx.stmt
        for rule in embedded_rules if ctx.block else statement_rules:
            assert rule.check is not None
            for message in rule.check(ctx):
                raws.append(raw_finding(rule, item, owner[id(outer)], outer, message))
                if ctx.block is not None:
                    raws[-1].inner = ctx.stmt
                    raws[-1].finding = with_changes(
                        raws[-1].finding,
                        message=f"in the DO block at line {outer.line}: {message}",
                        statement=shorten(ctx.stmt.sql),
                    )
    step_ctx = StepContext(
        step=step,
        statements=tuple(stmt for _, stmt in pairs),
        complete=item.complete,
    )
    for rule in rules_of(Scope.STEP, off):
        assert rule.check is not None
        for found, message in rule.check(step_ctx):
            owned = owner.get(id(found)) if found is not None else None
            raws.append(raw_finding(rule, item, owned, found, message))
    return raws


# -- suppressions --------------------------------------------------------------------


def _apply_suppressions(
    collected: list[CollectedStep],
    raws: list[RawFinding],
    off: frozenset[str],
    squawk_ran: bool,
    printed: set[str],
) -> tuple[list[Finding], list[Finding]]:
    known = set(RULES) | KNOWN_RULES | printed
    python_cache: dict[str, list[Suppression]] = {}
    by_piece: dict[int, _Suppressions] = {}
    extra: list[Finding] = []
    for item in collected:
        for piece in item.pieces:
            found = _Suppressions(sql=sql_suppressions(piece.sql))
            if piece.python_file is not None and piece.python_line is not None:
                found.python = [
                    s
                    for s in _python_suppressions(piece.python_file, python_cache)
                    if piece.python_line - 1 <= s.line <= piece.python_line
                ]
            by_piece[id(piece)] = found
            for supp in found.sql:
                problem = _invalid(supp, known)
                if problem:
                    extra.append(_suppression_finding(item, piece, supp, problem))
    used: set[int] = set()
    active: list[Finding] = []
    suppressed: list[Finding] = []
    for raw in raws:
        match = _matching(raw, by_piece)
        if match is None:
            active.append(raw.finding)
        else:
            used.add(id(match))
            suppressed.append(raw.finding.suppressed(match.reason))
    for item in collected:
        for piece in item.pieces:
            found = by_piece[id(piece)]
            for supp in found.sql + found.python:
                if id(supp) in used or _invalid(supp, known):
                    continue
                if any(r in off for r in supp.rules):
                    continue
                if not squawk_ran and not all(r in RULES for r in supp.rules):
                    continue  # squawk's rules did not run: cannot tell
                extra.append(
                    _suppression_finding(
                        item,
                        piece,
                        supp,
                        f"nothing to suppress for {', '.join(supp.rules)} here",
                        rule=RULES["unused-suppression"],
                        python=supp in found.python,
                    )
                )
    return [*active, *(f for f in extra if f.rule not in off)], suppressed


def _python_suppressions(
    path: str, cache: dict[str, list[Suppression]]
) -> list[Suppression]:
    if path not in cache:
        try:
            with open(path, encoding="utf-8") as handle:
                cache[path] = python_suppressions(handle.read())
        except OSError:
            cache[path] = []
    return cache[path]


def _invalid(supp: Suppression, known: set[str]) -> str | None:
    if not supp.rules:
        return "the suppression names no rule"
    unknown = [r for r in supp.rules if r not in known]
    if unknown:
        return f"unknown rule {', '.join(unknown)}"
    if not supp.reason:
        return f"the suppression of {', '.join(supp.rules)} gives no reason"
    return None


def _matching(
    raw: RawFinding, by_piece: dict[int, _Suppressions]
) -> Suppression | None:
    rule = raw.finding.rule
    pieces = [raw.piece] if raw.piece is not None else raw.collected.pieces
    for piece in pieces:
        found = by_piece.get(id(piece))
        if found is None:
            continue
        for supp in found.sql:
            if rule not in supp.rules or not supp.reason:
                continue
            if raw.stmt is None:
                if raw.piece is None or raw.finding.line is None:
                    return supp  # a step-level finding: anywhere in the step
                if supp.covers(raw.finding.line, raw.finding.line):
                    return supp
            elif supp.covers(raw.stmt.line, raw.stmt.end_line):
                return supp
        for supp in found.python:
            if rule in supp.rules and supp.reason:
                return supp
    return None


def _suppression_finding(
    item: CollectedStep,
    piece: Piece,
    supp: Suppression,
    message: str,
    *,
    rule: Rule | None = None,
    python: bool = False,
) -> Finding:
    rule = rule or RULES["invalid-suppression"]
    location = piece.location
    if python and piece.python_file is not None:
        location = f"{display_path(piece.python_file)}:{supp.line}"
    return Finding(
        rule=rule.id,
        severity=rule.severity,
        message=message,
        hint=rule.hint,
        step_id=item.step.id,
        phase=item.step.phase.value,
        location=location,
        line=None if python else supp.line,
    )
