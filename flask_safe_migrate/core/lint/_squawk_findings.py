"""squawk's findings on collected steps: what squawk reads, where each finding is,
and which cannot apply as PostgreSQL runs the step (those are dropped).

Schema steps and the statements of DO blocks are read as one transaction
(``--assume-in-transaction``). Only a step's own SQL judges its findings.
"""

from __future__ import annotations

import bisect
import logging
import typing as t
from dataclasses import dataclass
from dataclasses import field

from ..sql import Statement
from ..steps import Phase
from . import _ast
from ._raw import RawFinding
from ._raw import raw_finding
from ._raw import shorten
from ._raw import with_changes
from .collect import CollectedStep
from .collect import Piece
from .context import StatementContext
from .context import statement_contexts
from .findings import Severity
from .findings import Source
from .rules import Rule
from .rules import Scope
from .squawk import EXCLUDED_RULES
from .squawk import KNOWN_RULES
from .squawk import STYLE_RULES
from .squawk import SquawkViolation
from .squawk import run_squawk
from .squawk import severity_of

__all__ = ["run_squawk_on", "squawk_findings"]

logger = logging.getLogger(__name__)


def run_squawk_on(
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


def _step_facts(collected: list[CollectedStep], ours: list[RawFinding]) -> _StepFacts:
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


def squawk_findings(
    collected: list[CollectedStep],
    violations: list[SquawkViolation],
    ours: list[RawFinding],
    off: frozenset[str],
) -> list[RawFinding]:
    facts = _step_facts(collected, ours)
    raws: list[RawFinding] = []
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


def _squawk_raw(violation: SquawkViolation, where: _Located) -> RawFinding:
    block = where.block
    message = violation.message
    if block is not None:
        message = f"in the DO block at line {block.line}: {message}"
    raw = raw_finding(
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
    raw.finding = with_changes(
        raw.finding, rule=violation.rule, statement=shorten(where.stmt.sql)
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


def _alter_names(stmt: Statement, subtype: str) -> tuple[str, list[str]] | None:
    """The table and names of *stmt*'s ``subtype`` commands, if it is ALTER TABLE."""
    node = stmt.node
    if _ast.node_type(node) != "AlterTableStmt":
        return None
    names = [
        cmd.name for cmd in node.cmds or () if _ast.enum_name(cmd.subtype) == subtype
    ]
    return _ast.relation_name(node.relation), names


def _drops_only(stmt: Statement, constraints: set[tuple[str, str]]) -> bool:
    """Whether *stmt* drops only constraints among *constraints*."""
    found = _alter_names(stmt, "AT_DropConstraint")
    if found is None:
        return False
    table, dropped = found
    return bool(dropped) and all((table, name) in constraints for name in dropped)


def _set_not_null_proven(stmt: Statement, proven: frozenset[tuple[str, str]]) -> bool:
    found = _alter_names(stmt, "AT_SetNotNull")
    if found is None:
        return False
    table, columns = found
    return bool(columns) and all(
        (table, c) in proven or (table, "*") in proven for c in columns
    )
