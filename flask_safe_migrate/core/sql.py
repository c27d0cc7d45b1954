"""SQL text: split and classify statements (the only module that imports pglast), quote.

The bottom layer: every other module may use it, and it imports nothing of the
package but :mod:`core.lazy` (pglast is loaded on the first parse).
"""

from __future__ import annotations

import bisect
import enum
import functools
import json
import re
import string
import typing as t
from dataclasses import dataclass
from dataclasses import field

from .lazy import lazy_module

if t.TYPE_CHECKING:
    import pglast.ast
    import pglast.enums
    import pglast.parser
else:
    # Imported on first parse: an up-to-date boot never parses (see core.lazy).
    pglast = lazy_module("pglast")

__all__ = [
    "SqlComment",
    "SqlSyntaxError",
    "Statement",
    "StatementKind",
    "duration_literal",
    "has_dml",
    "literal",
    "normalize_sql",
    "quote_ident",
    "split_statements",
    "sql_comments",
]


class StatementKind(enum.Enum):
    """What a statement does, as far as running it in a migration step is concerned."""

    #: CREATE / ALTER / DROP / COMMENT / GRANT ..., index builds excepted; also
    #: CREATE TABLE AS, SELECT INTO, CREATE RULE, and DO blocks without DML.
    DDL = "ddl"
    #: INSERT / UPDATE / DELETE / MERGE / COPY / TRUNCATE, or any statement that
    #: contains one (a data-modifying CTE, a DO block, EXPLAIN ANALYZE of DML...).
    DML = "dml"
    #: CREATE INDEX, REINDEX, DROP INDEX (see :attr:`Statement.concurrent`).
    INDEX_BUILD = "index_build"
    #: A plain SELECT / VALUES / SHOW / EXPLAIN that modifies nothing.
    QUERY = "query"
    #: VACUUM, ANALYZE, LOCK, CHECKPOINT, NOTIFY, LISTEN, LOAD, PREPARE, DISCARD,
    #: DECLARE CURSOR, REFRESH MATERIALIZED VIEW, CLUSTER, CALL, SET LOCAL ...
    UTILITY = "utility"
    #: BEGIN / START / COMMIT / END / ROLLBACK / SAVEPOINT / RELEASE /
    #: PREPARE TRANSACTION.
    TRANSACTION_CONTROL = "transaction_control"
    #: SET / SET SESSION / RESET / SET ROLE (anything but SET LOCAL), and a
    #: ``SELECT set_config(..., false)``.
    SESSION_SETTING = "session_setting"


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a source text, with what we know about it.

    ``source[stmt.start:stmt.end] == stmt.sql`` holds for the source it was split from.
    """

    #: The statement's own text: no surrounding whitespace or comments, no ``;``.
    sql: str
    #: Character offset of the statement's first token in the source.
    start: int
    #: Character offset just past the statement's last token (before any ``;``).
    end: int
    #: 1-based line of the source on which the statement's first token is.
    line: int
    #: The pglast node class name, e.g. ``"AlterTableStmt"``.
    node_type: str
    #: The statement's kind.
    kind: StatementKind
    #: CREATE INDEX / DROP INDEX / REINDEX with CONCURRENTLY.
    concurrent: bool
    #: Sorted DML kinds found anywhere in it (CTEs, DO blocks, EXECUTE of a
    #: literal): ``"copy"``, ``"delete"``, ``"insert"``, ``"merge"``,
    #: ``"truncate"``, ``"update"``.
    dml_kinds: tuple[str, ...]
    #: Relations the statement acts on (its targets, not the tables it only reads),
    #: as the parser names them: schema-qualified when written so, unquoted
    #: identifiers folded to lower case.  De-duplicated, in order of discovery.
    relations: tuple[str, ...]
    #: Transaction-pooling hazards, in order of discovery: ``"session-set"``,
    #: ``"session-advisory-lock"``, ``"listen"``, ``"prepare"``,
    #: ``"declare-with-hold"``, ``"temp-table"``, ``"load"``, ``"discard"``.
    hazards: tuple[str, ...]
    #: A DO block runs SQL we could not inspect (a non-literal EXECUTE, a body we
    #: could not parse, a language other than PL/pgSQL).
    dynamic_sql: bool
    #: The parser's node for the statement (a ``pglast.ast`` node), for the lint
    #: rules that look at its details; node locations are offsets in the source.
    node: t.Any = field(default=None, compare=False, repr=False)
    #: The statements a DO block runs: its SQL statements and the string literals
    #: it EXECUTEs (nested blocks' too, flattened), each at the block's position.
    embedded: tuple[Statement, ...] = field(default=(), compare=False, repr=False)
    #: The conditions of a DO block's EXCEPTION WHEN handlers that do not raise
    #: again (``"others"``, ``"lock_not_available"``...), so a failure goes unseen.
    swallowed: tuple[str, ...] = ()

    @property
    def end_line(self) -> int:
        """1-based line of the source on which the statement's last token is."""
        return self.line + self.sql.count("\n")


class SqlSyntaxError(ValueError):
    """The SQL could not be parsed.

    :ivar message: the parser's error text, e.g. ``syntax error at or near "FOO"``.
    :ivar position: 0-based character offset of the error in the source, or ``None``.
    :ivar line: 1-based line of the error in the source, or ``None``.
    :ivar statement: the text of the statement around the error (best effort), or
        ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        position: int | None = None,
        line: int | None = None,
        statement: str | None = None,
    ) -> None:
        self.message = message
        self.position = position
        self.line = line
        self.statement = statement
        super().__init__(self._render())

    def _render(self) -> str:
        text = " ".join(self.message.split())
        if self.line is not None:
            text += f" at line {self.line}"
        if self.statement:
            text += ": " + " ".join(self.statement.split())[:120]
        return text

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[t.Any, ...]:
        return (
            _make_syntax_error,
            (self.message, self.position, self.line, self.statement),
        )


def _make_syntax_error(
    message: str, position: int | None, line: int | None, statement: str | None
) -> SqlSyntaxError:
    return SqlSyntaxError(message, position=position, line=line, statement=statement)


# --------------------------------------------------------------------------- tables

_DML_NODES: dict[str, str] = {
    "InsertStmt": "insert",
    "UpdateStmt": "update",
    "DeleteStmt": "delete",
    "MergeStmt": "merge",
    "CopyStmt": "copy",
    "TruncateStmt": "truncate",
}

_QUERY_NODES = frozenset({"SelectStmt", "VariableShowStmt", "ExplainStmt"})

_UTILITY_NODES = frozenset(
    {
        "CallStmt",
        "CheckPointStmt",
        "ClosePortalStmt",
        "ClusterStmt",
        "ConstraintsSetStmt",
        "DeallocateStmt",
        "DeclareCursorStmt",
        "DiscardStmt",
        "ExecuteStmt",
        "FetchStmt",
        "ListenStmt",
        "LoadStmt",
        "LockStmt",
        "NotifyStmt",
        "PrepareStmt",
        "RefreshMatViewStmt",
        "UnlistenStmt",
        "VacuumStmt",
    }
)

#: Nodes whose contents are stored, not run: never look inside them for DML or
#: session state (PREPARE stores a statement for a later EXECUTE; ALTER ROLE/
#: DATABASE/FUNCTION ... SET store a default for future sessions or calls; ALTER
#: SYSTEM writes the server's configuration file).
_OPAQUE_NODES = frozenset(
    {
        "AlterDatabaseSetStmt",
        "AlterFunctionStmt",
        "AlterRoleSetStmt",
        "AlterSystemStmt",
        "CreateFunctionStmt",
        "PrepareStmt",
        "RuleStmt",
    }
)

#: EXCEPTION WHEN conditions that only say the object already is as wanted (it
#: exists already, or is gone already): the usual guard of a re-runnable DDL.
_IDEMPOTENT_CONDITIONS = frozenset(
    {
        "duplicate_column",
        "duplicate_function",
        "duplicate_object",
        "duplicate_schema",
        "duplicate_table",
        "undefined_column",
        "undefined_function",
        "undefined_object",
        "undefined_table",
        # The same conditions by SQLSTATE (WHEN SQLSTATE '42P07').
        "42701",
        "42710",
        "42723",
        "42P01",
        "42P06",
        "42P07",
        "42703",
        "42704",
        "42883",
    }
)

#: PL/pgSQL transaction statements, as the SQL a DO block would send.
_PLPGSQL_TRANSACTION = {
    "PLpgSQL_stmt_commit": "COMMIT",
    "PLpgSQL_stmt_rollback": "ROLLBACK",
}

#: ``elog_level`` of RAISE EXCEPTION (PostgreSQL's ERROR); lower levels only report.
_ELOG_ERROR = 21

#: Attributes of a statement node that hold the relation(s) it acts on.
_RELATION_FIELDS: dict[str, tuple[str, ...]] = {
    "AlterObjectSchemaStmt": ("relation",),
    "AlterOwnerStmt": ("relation",),
    "AlterPolicyStmt": ("table",),
    "AlterSeqStmt": ("sequence",),
    "AlterTableStmt": ("relation",),
    "ClusterStmt": ("relation",),
    "CopyStmt": ("relation",),
    "CreatePolicyStmt": ("table",),
    "CreateSeqStmt": ("sequence",),
    "CreateStmt": ("relation",),
    "CreateTableAsStmt": ("into",),
    "CreateTrigStmt": ("relation",),
    "DeleteStmt": ("relation",),
    "IndexStmt": ("relation",),
    "InsertStmt": ("relation",),
    "LockStmt": ("relations",),
    "MergeStmt": ("relation",),
    "RefreshMatViewStmt": ("relation",),
    "ReindexStmt": ("relation",),
    "RenameStmt": ("relation",),
    "RuleStmt": ("relation",),
    "SelectStmt": ("intoClause",),
    "TruncateStmt": ("relations",),
    "UpdateStmt": ("relation",),
    "VacuumStmt": ("rels",),
    "ViewStmt": ("view",),
}

_ADVISORY_LOCKS = frozenset(
    {
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
    }
)

_TRUE_WORDS = frozenset({"t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"})
_FALSE_WORDS = frozenset(
    {"f", "fa", "fal", "fals", "false", "n", "no", "of", "off", "0"}
)

_NON_ASCII = re.compile(r"[^\x00-\x7f]")

_COMMENT_TOKENS = frozenset({"SQL_COMMENT", "C_COMMENT"})

_SEMICOLON = "ASCII_59"

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

#: How deep EXECUTE-of-a-literal / nested DO blocks are followed.
_MAX_DEPTH = 8

#: PL/pgSQL ``PLpgSQL_expr.parseMode`` values (PostgreSQL's ``RawParseMode``).
_PARSE_DEFAULT = 0
_PARSE_TYPE_NAME = 1
_PARSE_EXPR = 2


@dataclass
class _Facts:
    """What a walk of one statement (and what it embeds) found."""

    dml: set[str] = field(default_factory=set)
    relations: list[str] = field(default_factory=list)
    hazards: list[str] = field(default_factory=list)
    dynamic: bool = False
    session_config: bool = False
    #: (text, node) of each statement a DO block runs, in order.
    embedded: list[tuple[str, t.Any]] = field(default_factory=list)
    swallowed: list[str] = field(default_factory=list)

    def relation(self, name: str) -> None:
        if name and name not in self.relations:
            self.relations.append(name)

    def hazard(self, name: str) -> None:
        if name not in self.hazards:
            self.hazards.append(name)


# --------------------------------------------------------------------------- splitting


def split_statements(sql: str) -> list[Statement]:
    """Split *sql* into its statements and classify each one.

    :param sql: any number of SQL statements, separated by ``;``.
    :returns: one :class:`Statement` per statement, in order; ``[]`` when *sql* holds
        only whitespace and comments.
    :raises SqlSyntaxError: when *sql* does not parse.
    """
    try:
        raws = pglast.parser.parse_sql(sql)
    except pglast.parser.ParseError as exc:
        raise _syntax_error(sql, exc) from None
    tokens = _code_tokens(sql)
    starts = [token.start for token in tokens] if tokens is not None else []
    statements = []
    for raw in raws:
        # pglast converts libpg_query's UTF-8 byte offsets to character offsets.
        location = raw.stmt_location or 0
        limit = location + raw.stmt_len if raw.stmt_len else len(sql)
        start, end = _bounds(sql, location, limit, tokens, starts)
        statements.append(_statement(sql, start, end, raw.stmt))
    return statements


def _code_tokens(sql: str) -> list[pglast.parser.Token] | None:
    """Return the non-comment tokens of *sql*, ``None`` if it does not scan."""
    try:
        return [
            token
            for token in pglast.parser.scan(sql)
            if token.name not in _COMMENT_TOKENS
        ]
    except pglast.parser.ParseError:
        return None


def _bounds(
    sql: str,
    location: int,
    limit: int,
    tokens: list[pglast.parser.Token] | None,
    starts: list[int],
) -> tuple[int, int]:
    """Return the character span of the tokens in ``[location, limit)``."""
    if tokens is not None:
        first = bisect.bisect_left(starts, location)
        last = bisect.bisect_left(starts, limit) - 1
        while last >= first and tokens[last].name == _SEMICOLON:
            last -= 1
        if last >= first:
            return tokens[first].start, tokens[last].end + 1
    # Fallback (the scanner failed where the parser did not): trim whitespace only.
    text = sql[location:limit]
    stripped = text.strip().rstrip(";").rstrip()
    start = location + (len(text) - len(text.lstrip()))
    return start, start + len(stripped)


def _statement(sql: str, start: int, end: int, node: t.Any) -> Statement:
    facts = _Facts()
    _analyze(node, facts, 0)
    line = sql.count("\n", 0, start) + 1
    embedded = tuple(
        _inner_statement(text, inner, start, end, line)
        for text, inner in facts.embedded
    )
    return _build(sql[start:end], start, end, line, node, facts, embedded)


def _inner_statement(
    text: str, node: t.Any, start: int, end: int, line: int
) -> Statement:
    """A statement a DO block runs, placed at the block (its own facts only)."""
    facts = _Facts()
    _analyze(node, facts, 1)
    return _build(text, start, end, line, node, facts, ())


def _build(
    text: str,
    start: int,
    end: int,
    line: int,
    node: t.Any,
    facts: _Facts,
    embedded: tuple[Statement, ...],
) -> Statement:
    kind, concurrent = _classify(node, facts)
    return Statement(
        sql=text,
        start=start,
        end=end,
        line=line,
        node_type=type(node).__name__,
        kind=kind,
        concurrent=concurrent,
        dml_kinds=tuple(sorted(facts.dml)),
        relations=tuple(facts.relations),
        hazards=tuple(facts.hazards),
        dynamic_sql=facts.dynamic,
        node=node,
        embedded=embedded,
        swallowed=tuple(facts.swallowed),
    )


def _syntax_error(sql: str, exc: pglast.parser.ParseError) -> SqlSyntaxError:
    message = str(exc.args[0]) if exc.args else "syntax error"
    position = _error_position(sql, exc)
    if position is None and "at end of input" in message and sql.strip():
        position = len(sql.rstrip())
    if position is None:
        return SqlSyntaxError(message)
    return SqlSyntaxError(
        message,
        position=position,
        line=sql.count("\n", 0, position) + 1,
        statement=_statement_around(sql, position),
    )


def _error_position(sql: str, exc: pglast.parser.ParseError) -> int | None:
    """Return the 0-based character offset of a parse error in *sql*, if known.

    PostgreSQL reports an error's cursor position in characters, but pglast converts
    it as if it were a UTF-8 byte offset, which is wrong after any non-ASCII
    character.  So for non-ASCII SQL, parse it again with every non-ASCII character
    replaced by one ASCII letter (same character offsets, bytes == characters) and
    take that position if the error is the same.
    """
    position = exc.args[1] if len(exc.args) > 1 else None
    if not isinstance(position, int) or not 0 <= position <= len(sql):
        return None
    if sql.isascii():
        return position
    ascii_sql = _NON_ASCII.sub("x", sql)
    try:
        pglast.parser.parse_sql(ascii_sql)
    except pglast.parser.ParseError as again:
        same = again.args[:1] == (_NON_ASCII.sub("x", str(exc.args[0])),)
        ascii_position = again.args[1] if len(again.args) > 1 else None
        if same and isinstance(ascii_position, int):
            return ascii_position
    return None


def _statement_around(sql: str, position: int) -> str | None:
    """Return the text between the semicolons around *position* (best effort)."""
    tokens = _code_tokens(sql)
    if tokens is not None:
        semicolons = [token.start for token in tokens if token.name == _SEMICOLON]
    else:
        # The scanner failed too (an unterminated literal): use raw semicolons.
        semicolons = [index for index, char in enumerate(sql) if char == ";"]
    index = bisect.bisect_left(semicolons, position)
    begin = semicolons[index - 1] + 1 if index > 0 else 0
    stop = semicolons[index] if index < len(semicolons) else len(sql)
    text = sql[begin:stop]
    if tokens is not None:
        # Drop the comments before the statement, as split_statements does.
        inside = [tk for tk in tokens if begin <= tk.start < stop]
        if inside:
            text = sql[inside[0].start : inside[-1].end + 1]
    return text.strip() or None


# --------------------------------------------------------------------------- analysis


def _analyze(node: t.Any, facts: _Facts, depth: int) -> None:
    """Record into *facts* what statement *node* targets and contains."""
    for name in _RELATION_FIELDS.get(type(node).__name__, ()):
        _add_relations(getattr(node, name, None), facts)
    _add_special_relations(node, facts)
    _walk(node, facts, depth)


def _add_relations(value: t.Any, facts: _Facts) -> None:
    if value is None:
        return
    if isinstance(value, (tuple, list)):
        for item in value:
            _add_relations(item, facts)
        return
    type_name = type(value).__name__
    if type_name == "RangeVar":
        parts = (value.catalogname, value.schemaname, value.relname)
        facts.relation(".".join(part for part in parts if part))
    elif type_name == "IntoClause":
        _add_relations(value.rel, facts)
    elif type_name == "VacuumRelation":
        _add_relations(value.relation, facts)


_RELATION_OBJECT_NAMES = (
    "OBJECT_FOREIGN_TABLE",
    "OBJECT_INDEX",
    "OBJECT_MATVIEW",
    "OBJECT_SEQUENCE",
    "OBJECT_TABLE",
    "OBJECT_VIEW",
)


@functools.cache
def _relation_objects() -> frozenset[t.Any]:
    """The object types that name a relation (built on first use: pglast is lazy)."""
    return frozenset(
        getattr(pglast.enums.ObjectType, n) for n in _RELATION_OBJECT_NAMES
    )


def _add_special_relations(node: t.Any, facts: _Facts) -> None:
    """Relations held as name lists (DROP, COMMENT) or in GRANT's object list."""
    type_name = type(node).__name__
    if type_name == "DropStmt" and node.removeType in _relation_objects():
        for obj in node.objects or ():
            facts.relation(_dotted(obj))
    elif type_name == "CommentStmt":
        if node.objtype in _relation_objects():
            facts.relation(_dotted(node.object))
        elif node.objtype == pglast.enums.ObjectType.OBJECT_COLUMN:
            facts.relation(_dotted(node.object[:-1]))
    elif (
        type_name == "GrantStmt"
        and node.targtype == pglast.enums.GrantTargetType.ACL_TARGET_OBJECT
        and node.objtype in _relation_objects()
    ):
        _add_relations(node.objects, facts)


def _dotted(names: t.Any) -> str:
    if not isinstance(names, (tuple, list)):
        names = (names,)
    return ".".join(str(getattr(name, "sval", "")) for name in names)


def _walk(root: t.Any, facts: _Facts, depth: int) -> None:
    """Visit every node under *root* (pre-order, without recursion)."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, (tuple, list)):
            stack.extend(reversed(node))
            continue
        if not isinstance(node, pglast.ast.Node):
            continue
        type_name = type(node).__name__
        _visit(type_name, node, facts, depth)
        if type_name in _OPAQUE_NODES or (
            type_name == "ExplainStmt" and not _explain_runs(node)
        ):
            continue
        children = [getattr(node, name, None) for name in node]
        stack.extend(
            child
            for child in reversed(children)
            if isinstance(child, (tuple, list, pglast.ast.Node))
        )


def _explain_runs(node: t.Any) -> bool:
    """Whether EXPLAIN runs its statement: ANALYZE, and not ``ANALYZE false``."""
    return any(
        getattr(option, "defname", None) == "analyze"
        and _const_truth_or_flag(option.arg)
        for option in node.options or ()
    )


def _visit(type_name: str, node: t.Any, facts: _Facts, depth: int) -> None:
    dml = _DML_NODES.get(type_name)
    if type_name == "CopyStmt" and not node.is_from:
        dml = None  # COPY ... TO only reads
    if dml is not None:
        facts.dml.add(dml)
        if type_name == "TruncateStmt":
            _add_relations(node.relations, facts)
        else:
            _add_relations(node.relation, facts)
    elif type_name == "FuncCall":
        _visit_call(node, facts)
    elif type_name == "DoStmt":
        _analyze_do(node, facts, depth)
    elif type_name == "VariableSetStmt":
        if not _is_local_set(node):
            facts.hazard("session-set")
    elif type_name == "DiscardStmt":
        facts.hazard("discard")
    elif type_name == "ListenStmt":
        facts.hazard("listen")
    elif type_name == "LoadStmt":
        facts.hazard("load")
    elif type_name == "PrepareStmt":
        facts.hazard("prepare")
    elif type_name == "DeclareCursorStmt":
        if (node.options or 0) & pglast.enums.CURSOR_OPT_HOLD:
            facts.hazard("declare-with-hold")
    elif type_name == "CreateStmt":
        rel = node.relation
        if rel is not None and rel.relpersistence == "t" and not _drops_on_commit(node):
            facts.hazard("temp-table")
    elif type_name == "IntoClause":
        rel = node.rel
        if rel is not None and rel.relpersistence == "t" and not _drops_on_commit(node):
            facts.hazard("temp-table")


def _drops_on_commit(node: t.Any) -> bool:
    action = getattr(node, "oncommit", None)
    if action is None:
        action = getattr(node, "onCommit", None)
    return bool(action == pglast.enums.OnCommitAction.ONCOMMIT_DROP)


def _is_local_set(node: t.Any) -> bool:
    """SET LOCAL and SET TRANSACTION last only as long as the transaction."""
    if node.is_local:
        return True
    return bool(
        node.kind == pglast.enums.VariableSetKind.VAR_SET_MULTI
        and node.name == "TRANSACTION"
    )


def _visit_call(node: t.Any, facts: _Facts) -> None:
    names = node.funcname or ()
    name = str(getattr(names[-1], "sval", "")) if names else ""
    if name in _ADVISORY_LOCKS:
        facts.hazard("session-advisory-lock")
    elif name == "set_config":
        args = list(node.args or ())
        named = [arg for arg in args if type(arg).__name__ == "NamedArgExpr"]
        is_local = next((arg.arg for arg in named if arg.name == "is_local"), None)
        if is_local is None and len(args) >= 3:
            is_local = args[2]
        if is_local is not None and _const_truth(is_local) is not True:
            facts.session_config = True
            facts.hazard("session-set")


def _const_truth(node: t.Any) -> bool | None:
    """Return the boolean a constant expression stands for, ``None`` if unknown."""
    while type(node).__name__ == "TypeCast":
        node = node.arg
    if type(node).__name__ != "A_Const" or node.isnull:
        return None
    value = node.val
    value_type = type(value).__name__
    if value_type == "Boolean":
        return bool(value.boolval)
    if value_type == "String":
        word = str(value.sval).strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def _classify(node: t.Any, facts: _Facts) -> tuple[StatementKind, bool]:
    type_name = type(node).__name__
    if type_name == "TransactionStmt":
        return StatementKind.TRANSACTION_CONTROL, False
    if type_name == "VariableSetStmt":
        if _is_local_set(node):
            return StatementKind.UTILITY, False
        return StatementKind.SESSION_SETTING, False
    if type_name == "IndexStmt":
        return StatementKind.INDEX_BUILD, bool(node.concurrent)
    if type_name == "ReindexStmt":
        concurrent = any(
            getattr(param, "defname", None) == "concurrently"
            and _const_truth_or_flag(param.arg)
            for param in node.params or ()
        )
        return StatementKind.INDEX_BUILD, concurrent
    if (
        type_name == "DropStmt"
        and node.removeType == pglast.enums.ObjectType.OBJECT_INDEX
    ):
        return StatementKind.INDEX_BUILD, bool(node.concurrent)
    if type_name == "CopyStmt" and not node.is_from:
        return (StatementKind.DML if facts.dml else StatementKind.QUERY), False
    if type_name in _DML_NODES:
        return StatementKind.DML, False
    if type_name == "DoStmt":
        return (StatementKind.DML if facts.dml else StatementKind.DDL), False
    if type_name in _QUERY_NODES:
        if type_name == "SelectStmt" and _select_into(node):
            return StatementKind.DDL, False
        if facts.dml:
            return StatementKind.DML, False
        if facts.session_config:
            return StatementKind.SESSION_SETTING, False
        return StatementKind.QUERY, False
    if type_name in _UTILITY_NODES:
        return (StatementKind.DML if facts.dml else StatementKind.UTILITY), False
    return StatementKind.DDL, False


def _const_truth_or_flag(arg: t.Any) -> bool:
    """A DefElem option without a value (``CONCURRENTLY``) means true."""
    if arg is None:
        return True
    type_name = type(arg).__name__
    if type_name == "Boolean":
        return bool(arg.boolval)
    if type_name == "String":
        return str(arg.sval).strip().lower() not in _FALSE_WORDS
    if type_name == "Integer":
        return bool(arg.ival)
    return _const_truth(arg) is not False


def _select_into(node: t.Any) -> bool:
    """SELECT ... INTO (the INTO may sit on the leftmost arm of a set operation)."""
    while node is not None:
        if getattr(node, "intoClause", None) is not None:
            return True
        node = getattr(node, "larg", None)
    return False


# --------------------------------------------------------------------------- DO blocks


def _analyze_do(node: t.Any, facts: _Facts, depth: int) -> None:
    body: str | None = None
    language = "plpgsql"
    for option in node.args or ():
        value = getattr(option.arg, "sval", None)
        if option.defname == "as" and isinstance(value, str):
            body = value
        elif option.defname == "language" and isinstance(value, str):
            language = value.lower()
    if body is None or language != "plpgsql" or depth >= _MAX_DEPTH:
        facts.dynamic = True
        return
    tag = "$fsm$"
    number = 0
    while tag in body:
        number += 1
        tag = f"$fsm{number}$"
    wrapped = (
        f"CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE plpgsql AS {tag}{body}{tag}"
    )
    try:
        tree = json.loads(pglast.parser.parse_plpgsql_json(wrapped))
    except (pglast.parser.ParseError, ValueError):
        facts.dynamic = True
        return
    _walk_plpgsql(tree, facts, depth + 1)


def _walk_plpgsql(tree: t.Any, facts: _Facts, depth: int) -> None:
    """Check every SQL text embedded in a PL/pgSQL parse tree (JSON), in order."""
    if isinstance(tree, list):
        for item in tree:
            _walk_plpgsql(item, facts, depth)
        return
    if not isinstance(tree, dict):
        return
    for key, value in tree.items():
        if key == "PLpgSQL_expr" and isinstance(value, dict):
            _check_expr(value, facts, depth)
            continue
        if key == "PLpgSQL_exception" and isinstance(value, dict):
            _check_handler(value, facts)
        if key in _PLPGSQL_TRANSACTION:
            _check_sql(_PLPGSQL_TRANSACTION[key], facts, depth, embed=True)
        if isinstance(value, dict):
            dynamic_key = _DYNAMIC_QUERY_KEYS.get(key)
            if dynamic_key is not None and dynamic_key in value:
                _check_dynamic(value[dynamic_key], facts, depth)
                value = {k: v for k, v in value.items() if k != dynamic_key}
        _walk_plpgsql(value, facts, depth)


def _check_handler(handler: dict[str, t.Any], facts: _Facts) -> None:
    """Note an EXCEPTION WHEN handler that neither raises again nor only guards."""
    names = [
        _condition_name(condition.get("PLpgSQL_condition", {}))
        for condition in handler.get("conditions") or ()
        if isinstance(condition, dict)
    ]
    if all(name in _IDEMPOTENT_CONDITIONS for name in names) or _raises(
        handler.get("action")
    ):
        return
    for name in names:
        shown = f"SQLSTATE '{name}'" if _is_sqlstate(name) else name
        if name not in _IDEMPOTENT_CONDITIONS and shown not in facts.swallowed:
            facts.swallowed.append(shown)


def _condition_name(condition: dict[str, t.Any]) -> str:
    """A condition's name (lower case) or its SQLSTATE code (upper case)."""
    name = str(condition.get("condname", ""))
    return name.upper() if _is_sqlstate(name) else name.lower()


def _is_sqlstate(name: str) -> bool:
    return len(name) == 5 and name[:2].isalnum() and any(c.isdigit() for c in name)


def _raises(tree: t.Any) -> bool:
    """Whether a PL/pgSQL tree (JSON) holds a RAISE at ERROR level, or ``RAISE;``."""
    if isinstance(tree, list):
        return any(_raises(item) for item in tree)
    if not isinstance(tree, dict):
        return False
    for key, value in tree.items():
        if key == "PLpgSQL_stmt_raise" and isinstance(value, dict):
            if value.get("elog_level", _ELOG_ERROR) >= _ELOG_ERROR:
                return True
        elif _raises(value):
            return True
    return False


#: PL/pgSQL statements running a query computed at run time, and where it is.
_DYNAMIC_QUERY_KEYS = {
    "PLpgSQL_stmt_dynexecute": "query",
    "PLpgSQL_stmt_dynfors": "query",
    "PLpgSQL_stmt_open": "dynquery",
    "PLpgSQL_stmt_return_query": "dynquery",
}


def _check_expr(expr: dict[str, t.Any], facts: _Facts, depth: int) -> None:
    query = expr.get("query")
    if not isinstance(query, str):
        return
    mode = expr.get("parseMode", _PARSE_DEFAULT)
    if mode == _PARSE_TYPE_NAME:
        return
    if mode == _PARSE_DEFAULT:
        _check_sql(query, facts, depth, embed=True)
        return
    if mode != _PARSE_EXPR:
        # An assignment, "target := expression": keep the expression.
        query = _assigned_expression(query)
        if query is None:
            facts.dynamic = True
            return
    _check_sql("SELECT " + query, facts, depth)


def _assigned_expression(text: str) -> str | None:
    try:
        tokens = pglast.parser.scan(text)
    except pglast.parser.ParseError:
        return None
    for token in tokens:
        if token.name in ("COLON_EQUALS", "ASCII_61"):
            return text[token.end + 1 :]
    return None


def _check_dynamic(value: t.Any, facts: _Facts, depth: int) -> None:
    """EXECUTE: follow a plain string literal, flag anything else as dynamic SQL."""
    expr = value.get("PLpgSQL_expr") if isinstance(value, dict) else None
    query = expr.get("query") if isinstance(expr, dict) else None
    if not isinstance(query, str):
        facts.dynamic = True
        return
    literal = _string_literal(query)
    if literal is None:
        facts.dynamic = True
        # The expression itself (e.g. format(...)) still runs: check its calls.
        _check_sql("SELECT " + query, facts, depth)
        return
    _check_sql(literal, facts, depth, embed=True)


def _string_literal(expression: str) -> str | None:
    """Return the value of *expression* if it is exactly one string literal."""
    try:
        tokens = _code_tokens(expression)
        if tokens is None or len(tokens) != 1 or tokens[0].name != "SCONST":
            return None
        (raw,) = pglast.parser.parse_sql("SELECT " + expression)
    except (pglast.parser.ParseError, ValueError):
        return None
    stmt: t.Any = raw.stmt
    value = stmt.targetList[0].val.val
    sval = getattr(value, "sval", None)
    return sval if isinstance(sval, str) else None


def _check_sql(sql: str, facts: _Facts, depth: int, *, embed: bool = False) -> None:
    """Analyze SQL a DO block runs; with *embed*, keep its statements too."""
    try:
        raws = pglast.parser.parse_sql(sql)
    except pglast.parser.ParseError:
        facts.dynamic = True
        return
    for raw in raws:
        if embed:
            location = raw.stmt_location or 0
            limit = location + raw.stmt_len if raw.stmt_len else len(sql)
            facts.embedded.append((sql[location:limit].strip(), raw.stmt))
        _analyze(raw.stmt, facts, depth)


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class SqlComment:
    """One comment of a SQL text (``-- ...`` or ``/* ... */``)."""

    #: The comment's text without its markers, stripped.
    text: str
    #: 1-based line of the source on which the comment starts.
    line: int


def sql_comments(sql: str) -> list[SqlComment]:
    """Return the comments of *sql*, in order (none when *sql* does not scan).

    Comment markers inside string literals and dollar-quoted bodies are not
    comments, which is why this asks the real scanner rather than a pattern.

    :param sql: any SQL text.
    """
    try:
        tokens = pglast.parser.scan(sql)
    except pglast.parser.ParseError:
        return []
    comments = []
    for token in tokens:
        if token.name not in _COMMENT_TOKENS:
            continue
        text = sql[token.start : token.end + 1]
        if token.name == "SQL_COMMENT":
            text = text[2:]
        else:
            text = text[2:-2] if text.endswith("*/") else text[2:]
        comments.append(
            SqlComment(text=text.strip(), line=sql.count("\n", 0, token.start) + 1)
        )
    return comments


def normalize_sql(sql: str) -> str:
    """Return the canonical text of *sql* used for checksums.

    The tokens are joined by single spaces, comments dropped, keywords and unquoted
    identifiers lower-cased (ASCII only, as PostgreSQL folds them), and trailing
    ``;`` dropped; string literals, quoted identifiers and numbers are kept exactly.
    Texts differing only in whitespace, comments, keyword case or a trailing ``;``
    therefore normalize equal, and any real change shows.

    :param sql: any SQL text.
    :returns: the normalized text; when *sql* cannot be scanned, *sql* with runs of
        whitespace collapsed to one space.
    """
    tokens = _code_tokens(sql)
    if tokens is None:
        return " ".join(sql.split())
    while tokens and tokens[-1].name == _SEMICOLON:
        tokens.pop()
    words = []
    for token in tokens:
        text = sql[token.start : token.end + 1]
        if token.kind != "NO_KEYWORD" or (
            token.name == "IDENT" and not text.startswith('"')
        ):
            text = text.translate(_ASCII_LOWER)
        words.append(text)
    return " ".join(words)


def has_dml(stmt: Statement) -> bool:
    """Return whether *stmt* modifies data, itself or anywhere inside it.

    :param stmt: a statement from :func:`split_statements`.
    :returns: ``stmt.kind is StatementKind.DML or bool(stmt.dml_kinds)``.
    """
    return stmt.kind is StatementKind.DML or bool(stmt.dml_kinds)


# -- quoting ---------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """Quote an identifier for PostgreSQL, always."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def literal(value: object) -> str:
    """Render ``value`` as a SQL literal (strings, numbers, None, bool, dict as jsonb).

    Relies on ``standard_conforming_strings = on`` (the default since PostgreSQL 9.1).
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return literal(json.dumps(value, sort_keys=True)) + "::jsonb"
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("string literal contains a NUL character")
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"cannot render {type(value).__name__} as a SQL literal")


def _milliseconds(seconds: float) -> str:
    """Render seconds as a PostgreSQL duration in whole milliseconds (at least 1)."""
    return f"{max(1, round(seconds * 1000))}ms"


def duration_literal(seconds: float) -> str:
    """Render seconds as a quoted PostgreSQL duration literal, e.g. ``'2000ms'``."""
    return literal(_milliseconds(seconds))
