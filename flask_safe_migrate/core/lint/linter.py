"""Lint steps: our rules on each statement, squawk's on the SQL, then suppressions."""

from __future__ import annotations

import bisect
import logging
import typing as t
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace

from ..sql import Statement
from ..steps import Phase
from ..steps import Step
from . import _ast
from .collect import CollectedStep
from .collect import Piece
from .collect import collect_step
from .collect import display_path
from .context import StatementContext
from .context import StepContext
from .context import statement_contexts
from .findings import Finding
from .findings import LintReport
from .findings import Severity
from .findings import Source
from .rules import RULES
from .rules import Rule
from .rules import Scope
from .rules import rules_of
from .squawk import EXCLUDED_RULES
from .squawk import KNOWN_RULES
from .squawk import STYLE_RULES
from .squawk import SquawkError
from .squawk import SquawkViolation
from .squawk import find_squawk
from .squawk import run_squawk
from .squawk import severity_of
from .squawk import squawk_version
from .suppress import Suppression
from .suppress import python_suppressions
from .suppress import sql_suppressions

__all__ = ["lint_sql", "lint_steps", "run_time_findings"]

logger = logging.getLogger(__name__)

_STATEMENT_WIDTH = 200


@dataclass
class _Raw:
    """A finding before suppressions, with where it points."""

    finding: Finding
    collected: CollectedStep
    piece: Piece | None = None
    stmt: Statement | None = None
    #: The statement of a DO block the finding is about (``stmt`` is the block).
    inner: Statement | None = None


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
    raws: list[_Raw] = []
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
                violations = _run_squawk(binary, collected, off)
            except SquawkError as exc:
                report.squawk_note = f"{exc}; ran our rules only"
            else:
                report.squawk_ran = True
                report.squawk_version = squawk_version(binary)
                raws += _squawk_findings(collected, violations, raws, off)
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
        checksum="",
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


def _our_findings(item: CollectedStep, off: frozenset[str]) -> list[_Raw]:
    raws: list[_Raw] = []
    step = item.step
    if item.record_error is not None:
        raws.append(
            _raw(
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
            raw = _raw(RULES["sql-syntax-error"], item, piece, None, error.message)
            raw.finding = _with(raw.finding, line=error.line, statement=error.statement)
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
                raws.append(_raw(rule, item, owner[id(outer)], outer, message))
                if ctx.block is not None:
                    raws[-1].inner = ctx.stmt
                    raws[-1].finding = _with(
                        raws[-1].finding,
                        message=f"in the DO block at line {outer.line}: {message}",
                        statement=_shorten(ctx.stmt.sql),
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
            raws.append(_raw(rule, item, owned, found, message))
    return raws


def _raw(
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
) -> _Raw:
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
        statement=_shorten(stmt.sql) if stmt is not None else None,
    )
    return _Raw(finding=finding, collected=item, piece=piece, stmt=stmt)


def _with(finding: Finding, **changes: t.Any) -> Finding:
    return replace(finding, **changes)


def _shorten(sql: str | None) -> str | None:
    if sql is None:
        return None
    text = " ".join(sql.split())
    if len(text) <= _STATEMENT_WIDTH:
        return text
    return text[: _STATEMENT_WIDTH - 3] + "..."


# -- squawk --------------------------------------------------------------------------


def _run_squawk(
    binary: str, collected: list[CollectedStep], off: frozenset[str]
) -> list[SquawkViolation]:
    """Run squawk on every piece and DO block; schema steps as one transaction."""
    exclude = [*EXCLUDED_RULES, *(r for r in off if r in KNOWN_RULES)]
    in_transaction, other = _squawk_files(collected)
    return [
        *run_squawk(
            binary, in_transaction, exclude=exclude, assume_in_transaction=True
        ),
        *run_squawk(binary, other, exclude=exclude),
    ]


def _squawk_files(
    collected: list[CollectedStep],
) -> tuple[dict[str, str], dict[str, str]]:
    """The SQL squawk reads, named ``step_piece`` or ``step_piece_statement``.

    Returns the files that run in one transaction (schema steps, and the
    statements each DO block runs), then the others.
    """
    in_transaction: dict[str, str] = {}
    other: dict[str, str] = {}
    for ci, item in enumerate(collected):
        files = in_transaction if item.step.phase is Phase.SCHEMA else other
        for pi, piece in enumerate(item.pieces):
            if piece.syntax_error is not None or not piece.statements:
                continue
            files[f"{ci:04d}_{pi:03d}"] = piece.sql
            for si, stmt in enumerate(piece.statements):
                if stmt.embedded:
                    in_transaction[f"{ci:04d}_{pi:03d}_{si:04d}"] = _block_sql(stmt)
    return in_transaction, other


def _block_sql(block: Statement) -> str:
    """The statements a DO block runs, one after another, as squawk reads them."""
    return "".join(inner.sql + ";\n" for inner in block.embedded)


def _block_statement(block: Statement, line: int) -> Statement:
    """The statement of *block* on *line* of :func:`_block_sql`'s text."""
    first = 1
    for inner in block.embedded:
        last = first + inner.sql.count("\n")
        if line <= last:
            return inner
        first = last + 1
    return block.embedded[-1]


_SQUAWK_RULE = Rule(
    id="squawk",
    severity=Severity.WARNING,
    summary="",
    hint="",
    scope=Scope.ENGINE,
)


@dataclass
class _StepFacts:
    """What squawk's findings are checked against, by statement id."""

    volatile: set[int] = field(default_factory=set)
    not_null_before: dict[int, frozenset[tuple[str, str]]] = field(default_factory=dict)
    not_null_checks: dict[int, set[tuple[str, str]]] = field(default_factory=dict)
    contexts: dict[int, StatementContext] = field(default_factory=dict)


@dataclass(frozen=True)
class _Located:
    """A squawk violation placed on a step, a piece and a statement."""

    item: CollectedStep
    piece: Piece
    stmt: Statement
    #: The DO block that runs ``stmt``, when squawk read the block's statements.
    block: Statement | None
    #: Offset of the violation in the piece's SQL (-1 inside a DO block).
    offset: int


def _step_facts(collected: list[CollectedStep], ours: list[_Raw]) -> _StepFacts:
    facts = _StepFacts()
    facts.volatile = {
        id(r.inner or r.stmt)
        for r in ours
        if r.finding.rule == "volatile-default-rewrite"
    }
    for item in collected:
        before, checks = _validated_not_null(item)
        facts.not_null_before.update(before)
        facts.not_null_checks.update(dict.fromkeys(before, checks))
        for ctx in statement_contexts(item.step, item.statements):
            facts.contexts[id(ctx.stmt)] = ctx
    return facts


def _squawk_findings(
    collected: list[CollectedStep],
    violations: list[SquawkViolation],
    ours: list[_Raw],
    off: frozenset[str],
) -> list[_Raw]:
    facts = _step_facts(collected, ours)
    raws: list[_Raw] = []
    seen: set[tuple[str, int]] = set()
    for violation in violations:
        if violation.rule in EXCLUDED_RULES or violation.rule in off:
            continue
        if violation.rule == "syntax-error":
            continue  # PostgreSQL's own parser accepted the SQL: it is the judge
        where = _locate(collected, violation)
        if where is None or _does_not_apply(violation.rule, where, facts):
            continue
        key = (violation.rule, id(where.stmt))
        if key not in seen:
            seen.add(key)
            raws.append(_squawk_raw(violation, where))
    return raws


def _locate(
    collected: list[CollectedStep], violation: SquawkViolation
) -> _Located | None:
    """Find the step, piece and statement of a violation in file ``ci_pi[_si]``."""
    try:
        ci, pi, *si = (int(part) for part in violation.file.split("_"))
        item, piece = collected[ci], collected[ci].pieces[pi]
        block = piece.statements[si[0]] if si else None
    except (ValueError, IndexError):
        logger.debug("squawk finding in an unknown file: %s", violation)
        return None
    if block is not None:
        inner = _block_statement(block, violation.line)
        return _Located(item, piece, inner, block, -1)
    offset = _offset(piece.sql, violation.line, violation.column)
    stmt = _statement_at(piece.statements, offset)
    return _Located(item, piece, stmt, None, offset) if stmt is not None else None


def _does_not_apply(rule: str, where: _Located, facts: _StepFacts) -> bool:
    """Whether squawk's *rule* cannot apply to the statement, as PostgreSQL runs it."""
    stmt = where.stmt
    ctx = facts.contexts.get(id(stmt))
    if rule not in STYLE_RULES and ctx is not None and ctx.targets_new_table:
        return True  # a table created earlier in the step has no readers yet
    if rule == "adding-field-with-default":
        return id(stmt) in facts.volatile  # reported by volatile-default-rewrite
    if rule == "constraint-missing-not-valid":
        # NOT VALID exists only for CHECK and FOREIGN KEY constraints.
        return _cannot_be_not_valid(stmt, where.offset)
    if rule == "adding-not-nullable-field":
        # A validated CHECK (col IS NOT NULL) lets SET NOT NULL skip the scan.
        proven = facts.not_null_before.get(id(stmt), frozenset())
        return _set_not_null_proven(stmt, proven)
    if rule == "ban-drop-constraint":
        # The helper CHECK of the SET NOT NULL recipe: now redundant.
        return _drops_only(stmt, facts.not_null_checks.get(id(stmt), set()))
    return False


def _squawk_raw(violation: SquawkViolation, where: _Located) -> _Raw:
    block = where.block
    message = violation.message
    if block is not None:
        message = f"in the DO block at line {block.line}: {message}"
    raw = _raw(
        _SQUAWK_RULE,
        where.item,
        where.piece,
        block or where.stmt,
        message,
        severity=severity_of(violation.rule),
        hint=violation.help or f"see https://squawkhq.com/docs/{violation.rule}",
        source=Source.SQUAWK,
        line=block.line if block is not None else violation.line,
    )
    raw.finding = _with(
        raw.finding, rule=violation.rule, statement=_shorten(where.stmt.sql)
    )
    return raw


def _offset(sql: str, line: int, column: int) -> int:
    starts = [0]
    starts += [i + 1 for i, char in enumerate(sql) if char == "\n"]
    index = min(max(line, 1), len(starts)) - 1
    return starts[index] + max(column, 0)


def _statement_at(statements: list[Statement], offset: int) -> Statement | None:
    if not statements:
        return None
    starts = [s.start for s in statements]
    index = bisect.bisect_right(starts, offset) - 1
    return statements[max(index, 0)]


def _cannot_be_not_valid(stmt: Statement, offset: int) -> bool:
    """Whether the constraint squawk points at is UNIQUE, PRIMARY KEY or EXCLUDE."""
    added = [
        cmd.def_
        for cmd in getattr(stmt.node, "cmds", None) or ()
        if _ast.enum_name(cmd.subtype) == "AT_AddConstraint"
        and _ast.node_type(cmd.def_) == "Constraint"
    ]
    if not added:
        return False
    after = [c for c in added if (getattr(c, "location", -1) or -1) >= offset]
    flagged = [min(after, key=lambda c: c.location)] if after else added
    return all(
        _ast.enum_name(c.contype)
        in {"CONSTR_UNIQUE", "CONSTR_PRIMARY", "CONSTR_EXCLUSION"}
        for c in flagged
    )


def _not_null_check(constraint: t.Any) -> str | None:
    """The column of a ``CHECK (col IS NOT NULL)`` constraint, else None."""
    if _ast.enum_name(getattr(constraint, "contype", None)) != "CONSTR_CHECK":
        return None
    expr = constraint.raw_expr
    if (
        _ast.node_type(expr) == "NullTest"
        and _ast.enum_name(expr.nulltesttype) == "IS_NOT_NULL"
        and _ast.node_type(expr.arg) == "ColumnRef"
    ):
        return str(getattr(expr.arg.fields[-1], "sval", "")) or None
    return None


def _validated_not_null(
    item: CollectedStep,
) -> tuple[dict[int, frozenset[tuple[str, str]]], set[tuple[str, str]]]:
    """For each statement of one step, the (table, column) proven NOT NULL before it.

    A ``CHECK (col IS NOT NULL)`` counts once validated: added without NOT VALID,
    or by a later ``VALIDATE CONSTRAINT``. Only this step's SQL is read (another
    step's must not change this one's findings), so ``VALIDATE CONSTRAINT`` of a
    constraint added by an earlier step is taken as the recipe's check: it proves
    the table's columns (``"*"``). Also returns the (table, constraint name) of
    each such check, dropped once SET NOT NULL has made it redundant.
    """
    names: set[tuple[str, str]] = set()
    proven: set[tuple[str, str]] = set()
    pending: dict[tuple[str, str], str] = {}
    guessed: set[tuple[str, str]] = set()
    set_not_null: set[str] = set()
    before: dict[int, frozenset[tuple[str, str]]] = {}
    for stmt in item.statements:
        before[id(stmt)] = frozenset(proven)
        node = stmt.node
        if _ast.node_type(node) != "AlterTableStmt":
            continue
        table = _ast.relation_name(node.relation)
        for cmd in node.cmds or ():
            subtype = _ast.enum_name(cmd.subtype)
            if subtype == "AT_AddConstraint":
                column = _not_null_check(cmd.def_)
                if column is None:
                    continue
                names.add((table, cmd.def_.conname or ""))
                if cmd.def_.skip_validation:
                    pending[(table, cmd.def_.conname or "")] = column
                else:
                    proven.add((table, column))
            elif subtype == "AT_ValidateConstraint":
                key = (table, cmd.name or "")
                if key in pending:
                    proven.add((table, pending[key]))
                elif key not in names:
                    guessed.add(key)
                    proven.add((table, "*"))
            elif subtype == "AT_SetNotNull":
                set_not_null.add(table)
    names |= {key for key in guessed if key[0] in set_not_null}
    return before, names


def _drops_only(stmt: Statement, constraints: set[tuple[str, str]]) -> bool:
    """Whether *stmt* drops only constraints among *constraints*."""
    node = stmt.node
    if _ast.node_type(node) != "AlterTableStmt":
        return False
    table = _ast.relation_name(node.relation)
    dropped = [
        cmd.name
        for cmd in node.cmds or ()
        if _ast.enum_name(cmd.subtype) == "AT_DropConstraint"
    ]
    return bool(dropped) and all((table, name) in constraints for name in dropped)


def _set_not_null_proven(stmt: Statement, proven: frozenset[tuple[str, str]]) -> bool:
    node = stmt.node
    if _ast.node_type(node) != "AlterTableStmt":
        return False
    table = _ast.relation_name(node.relation)
    columns = [
        cmd.name
        for cmd in node.cmds or ()
        if _ast.enum_name(cmd.subtype) == "AT_SetNotNull"
    ]
    return bool(columns) and all(
        (table, c) in proven or (table, "*") in proven for c in columns
    )


# -- suppressions --------------------------------------------------------------------


def _apply_suppressions(
    collected: list[CollectedStep],
    raws: list[_Raw],
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


def _matching(raw: _Raw, by_piece: dict[int, _Suppressions]) -> Suppression | None:
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
