"""Unit tests of the SQL splitter and classifier (no database)."""

from __future__ import annotations

import pickle

import pytest

from flask_safe_migrate.core.sql import SqlSyntaxError
from flask_safe_migrate.core.sql import Statement
from flask_safe_migrate.core.sql import StatementKind
from flask_safe_migrate.core.sql import has_dml
from flask_safe_migrate.core.sql import normalize_sql
from flask_safe_migrate.core.sql import split_statements

DO_DDL = """DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'fk_a') THEN
    ALTER TABLE a ADD CONSTRAINT fk_a FOREIGN KEY (b_id) REFERENCES b (id) NOT VALID;
  END IF;
END $$"""

DO_DML = """DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT id FROM a LOOP
    UPDATE a SET n = n + 1 WHERE id = r.id;
  END LOOP;
END $$"""


def one(sql: str) -> Statement:
    """Parse *sql*, which must hold exactly one statement."""
    (stmt,) = split_statements(sql)
    return stmt


@pytest.mark.parametrize(
    ("sql", "kind", "node_type"),
    [
        ("CREATE TABLE t (id int)", StatementKind.DDL, "CreateStmt"),
        ("ALTER TABLE t ADD COLUMN a int", StatementKind.DDL, "AlterTableStmt"),
        ("DROP TABLE t", StatementKind.DDL, "DropStmt"),
        ("COMMENT ON TABLE t IS 'x'", StatementKind.DDL, "CommentStmt"),
        ("GRANT SELECT ON t TO bob", StatementKind.DDL, "GrantStmt"),
        ("CREATE TABLE t2 AS SELECT * FROM t", StatementKind.DDL, "CreateTableAsStmt"),
        ("SELECT * INTO t2 FROM t", StatementKind.DDL, "SelectStmt"),
        (
            "CREATE MATERIALIZED VIEW mv AS SELECT 1",
            StatementKind.DDL,
            "CreateTableAsStmt",
        ),
        ("CREATE VIEW v AS SELECT 1", StatementKind.DDL, "ViewStmt"),
        (
            "CREATE RULE r AS ON INSERT TO v DO INSTEAD INSERT INTO t VALUES (NEW.id)",
            StatementKind.DDL,
            "RuleStmt",
        ),
        (
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql"
            " BEGIN ATOMIC INSERT INTO t VALUES (1); END",
            StatementKind.DDL,
            "CreateFunctionStmt",
        ),
        (DO_DDL, StatementKind.DDL, "DoStmt"),
        (DO_DML, StatementKind.DML, "DoStmt"),
        ("INSERT INTO t VALUES (1)", StatementKind.DML, "InsertStmt"),
        ("UPDATE t SET a = 1", StatementKind.DML, "UpdateStmt"),
        ("DELETE FROM t", StatementKind.DML, "DeleteStmt"),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            StatementKind.DML,
            "MergeStmt",
        ),
        ("COPY t FROM STDIN", StatementKind.DML, "CopyStmt"),
        ("COPY t TO STDOUT", StatementKind.QUERY, "CopyStmt"),
        ("TRUNCATE t", StatementKind.DML, "TruncateStmt"),
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d",
            StatementKind.DML,
            "SelectStmt",
        ),
        ("EXPLAIN ANALYZE DELETE FROM t", StatementKind.DML, "ExplainStmt"),
        ("CREATE INDEX i ON t (a)", StatementKind.INDEX_BUILD, "IndexStmt"),
        ("REINDEX INDEX i", StatementKind.INDEX_BUILD, "ReindexStmt"),
        ("DROP INDEX i", StatementKind.INDEX_BUILD, "DropStmt"),
        ("SELECT 1", StatementKind.QUERY, "SelectStmt"),
        ("VALUES (1), (2)", StatementKind.QUERY, "SelectStmt"),
        ("SHOW search_path", StatementKind.QUERY, "VariableShowStmt"),
        ("EXPLAIN SELECT 1", StatementKind.QUERY, "ExplainStmt"),
        ("SELECT set_config('a.b', 'c', true)", StatementKind.QUERY, "SelectStmt"),
        ("SELECT pg_advisory_lock(1)", StatementKind.QUERY, "SelectStmt"),
        ("VACUUM t", StatementKind.UTILITY, "VacuumStmt"),
        ("ANALYZE t", StatementKind.UTILITY, "VacuumStmt"),
        ("LOCK TABLE t IN SHARE MODE", StatementKind.UTILITY, "LockStmt"),
        ("CHECKPOINT", StatementKind.UTILITY, "CheckPointStmt"),
        ("NOTIFY ch", StatementKind.UTILITY, "NotifyStmt"),
        ("LISTEN ch", StatementKind.UTILITY, "ListenStmt"),
        ("LOAD 'auto_explain'", StatementKind.UTILITY, "LoadStmt"),
        ("PREPARE p AS SELECT 1", StatementKind.UTILITY, "PrepareStmt"),
        ("DISCARD ALL", StatementKind.UTILITY, "DiscardStmt"),
        ("DECLARE c CURSOR FOR SELECT 1", StatementKind.UTILITY, "DeclareCursorStmt"),
        ("SET LOCAL lock_timeout = '5s'", StatementKind.UTILITY, "VariableSetStmt"),
        ("REFRESH MATERIALIZED VIEW mv", StatementKind.UTILITY, "RefreshMatViewStmt"),
        ("BEGIN", StatementKind.TRANSACTION_CONTROL, "TransactionStmt"),
        ("START TRANSACTION", StatementKind.TRANSACTION_CONTROL, "TransactionStmt"),
        ("COMMIT", StatementKind.TRANSACTION_CONTROL, "TransactionStmt"),
        ("END", StatementKind.TRANSACTION_CONTROL, "TransactionStmt"),
        ("ROLLBACK", StatementKind.TRANSACTION_CONTROL, "TransactionStmt"),
        ("SAVEPOINT s", StatementKind.TRANSACTION_CONTROL, "TransactionStmt"),
        ("RELEASE SAVEPOINT s", StatementKind.TRANSACTION_CONTROL, "TransactionStmt"),
        (
            "PREPARE TRANSACTION 'x'",
            StatementKind.TRANSACTION_CONTROL,
            "TransactionStmt",
        ),
        ("SET search_path = app", StatementKind.SESSION_SETTING, "VariableSetStmt"),
        (
            "SET SESSION statement_timeout = 0",
            StatementKind.SESSION_SETTING,
            "VariableSetStmt",
        ),
        ("SET ROLE admin", StatementKind.SESSION_SETTING, "VariableSetStmt"),
        ("RESET search_path", StatementKind.SESSION_SETTING, "VariableSetStmt"),
        ("RESET ALL", StatementKind.SESSION_SETTING, "VariableSetStmt"),
        (
            "SELECT set_config('a.b', 'c', false)",
            StatementKind.SESSION_SETTING,
            "SelectStmt",
        ),
        (
            "SELECT set_config('a.b', 'c', 'f')",
            StatementKind.SESSION_SETTING,
            "SelectStmt",
        ),
    ],
)
def test_kind(sql: str, kind: StatementKind, node_type: str) -> None:
    """Each statement gets the expected kind and node type."""
    stmt = one(sql)
    assert (stmt.kind, stmt.node_type) == (kind, node_type)


@pytest.mark.parametrize(
    ("sql", "dml_kinds"),
    [
        ("INSERT INTO t VALUES (1)", ("insert",)),
        ("UPDATE t SET a = 1", ("update",)),
        ("DELETE FROM t", ("delete",)),
        ("TRUNCATE t", ("truncate",)),
        ("COPY t TO STDOUT", ()),
        ("COPY (SELECT 1) TO STDOUT", ()),
        (
            "WITH d AS (DELETE FROM a RETURNING id) UPDATE b SET x = 1",
            ("delete", "update"),
        ),
        (
            "WITH i AS (INSERT INTO a VALUES (1) RETURNING id) SELECT * FROM i",
            ("insert",),
        ),
        (DO_DML, ("update",)),
        ("DO $$ BEGIN EXECUTE 'DELETE FROM t'; END $$", ("delete",)),
        ("DO $$ BEGIN EXECUTE E'INSERT INTO t VALUES (1)'; END $$", ("insert",)),
        ("DO $$ BEGIN PERFORM 1; INSERT INTO t VALUES (1); END $$", ("insert",)),
        ("CREATE RULE r AS ON DELETE TO v DO INSTEAD DELETE FROM t", ()),
        ("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM t'", ()),
        (DO_DDL, ()),
        ("SELECT 1", ()),
    ],
)
def test_dml_kinds(sql: str, dml_kinds: tuple[str, ...]) -> None:
    """DML is found anywhere in a statement but stored rule and function bodies."""
    stmt = one(sql)
    assert stmt.dml_kinds == dml_kinds
    assert has_dml(stmt) is bool(dml_kinds)


@pytest.mark.parametrize(
    ("sql", "hazards"),
    [
        ("SET search_path = app", ("session-set",)),
        ("SET LOCAL search_path = app", ()),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", ()),
        ("SELECT set_config('a.b', 'c', false)", ("session-set",)),
        ("SELECT set_config('a.b', 'c', true)", ()),
        ("SELECT pg_advisory_lock(1)", ("session-advisory-lock",)),
        ("SELECT pg_catalog.pg_try_advisory_lock(1, 2)", ("session-advisory-lock",)),
        ("SELECT pg_advisory_lock_shared(1)", ("session-advisory-lock",)),
        ("SELECT pg_advisory_xact_lock(1)", ()),
        ("SELECT pg_try_advisory_xact_lock(1)", ()),
        ("LISTEN ch", ("listen",)),
        ("PREPARE p AS SELECT 1", ("prepare",)),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", ("declare-with-hold",)),
        ("DECLARE c CURSOR FOR SELECT 1", ()),
        ("CREATE TEMP TABLE tt (a int)", ("temp-table",)),
        ("CREATE TEMPORARY TABLE tt (a int) ON COMMIT DROP", ()),
        ("CREATE TEMP TABLE tt AS SELECT 1", ("temp-table",)),
        ("CREATE TABLE t (a int)", ()),
        ("LOAD 'auto_explain'", ("load",)),
        ("DISCARD ALL", ("discard",)),
        ("DO $$ BEGIN PERFORM pg_advisory_lock(7); END $$", ("session-advisory-lock",)),
        ("DO $$ BEGIN SET search_path = x; END $$", ("session-set",)),
    ],
)
def test_hazards(sql: str, hazards: tuple[str, ...]) -> None:
    """Transaction-pooling hazards are reported by id."""
    assert one(sql).hazards == hazards


@pytest.mark.parametrize(
    ("sql", "concurrent"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (a)", True),
        ("CREATE UNIQUE INDEX i ON t (a)", False),
        ("DROP INDEX CONCURRENTLY IF EXISTS i", True),
        ("DROP INDEX i", False),
        ("REINDEX INDEX CONCURRENTLY i", True),
        ("REINDEX (CONCURRENTLY) TABLE t", True),
        ("REINDEX TABLE t", False),
        ("ALTER TABLE t ADD COLUMN a int", False),
    ],
)
def test_concurrent(sql: str, concurrent: bool) -> None:
    """The CONCURRENTLY flag of index builds is reported."""
    assert one(sql).concurrent is concurrent


@pytest.mark.parametrize(
    ("sql", "relations"),
    [
        ("ALTER TABLE app.Users ADD COLUMN a int", ("app.users",)),
        ('ALTER TABLE "Users" ADD COLUMN a int', ("Users",)),
        ("CREATE INDEX i ON s.t (a)", ("s.t",)),
        ("INSERT INTO t SELECT * FROM u", ("t",)),
        ("WITH d AS (DELETE FROM a RETURNING id) UPDATE b SET x = 1", ("b", "a")),
        ("DROP TABLE a, s.b", ("a", "s.b")),
        ("TRUNCATE a, a", ("a",)),
        ("LOCK TABLE a, b", ("a", "b")),
        ("COMMENT ON COLUMN s.t.c IS 'x'", ("s.t",)),
        (DO_DDL, ("a",)),
        ("SELECT * FROM t", ()),
    ],
)
def test_relations(sql: str, relations: tuple[str, ...]) -> None:
    """The relations a statement acts on are listed once each, in order."""
    assert one(sql).relations == relations


@pytest.mark.parametrize(
    ("sql", "dynamic"),
    [
        (DO_DDL, False),
        ("DO $$ BEGIN EXECUTE 'DELETE FROM t'; END $$", False),
        ("DO $$ DECLARE q text := 'x'; BEGIN EXECUTE q; END $$", True),
        ("DO $$ BEGIN EXECUTE format('DELETE FROM %I', 't'); END $$", True),
        ("DO $$ BEGIN EXECUTE 'DELETE FROM ' || 't'; END $$", True),
        ("DO $$ BEGIN this is not plpgsql; END $$", True),
        ("DO LANGUAGE plpython3u $$ plpy.execute('DELETE FROM t') $$", True),
        ("SELECT 1", False),
    ],
)
def test_dynamic_sql(sql: str, dynamic: bool) -> None:
    """SQL a DO block runs that cannot be inspected is flagged, never fatal."""
    stmt = one(sql)
    assert stmt.dynamic_sql is dynamic
    if dynamic:
        assert stmt.kind is StatementKind.DDL


def test_unparseable_do_block_is_ddl() -> None:
    """A DO block whose body does not parse is DDL with dynamic SQL."""
    stmt = one("DO $$ BEGIN garbage; END $$")
    assert (stmt.kind, stmt.dynamic_sql, stmt.dml_kinds) == (
        StatementKind.DDL,
        True,
        (),
    )


def test_do_block_with_dollar_tag_in_body() -> None:
    """A DO body that contains our wrapping dollar tag is still inspected."""
    stmt = one("DO $x$ BEGIN EXECUTE $fsm$DELETE FROM t$fsm$; END $x$")
    assert (stmt.dml_kinds, stmt.dynamic_sql) == (("delete",), False)


def test_non_ascii_offsets_are_characters() -> None:
    """Offsets count characters, not UTF-8 bytes, after non-ASCII literals."""
    src = "SELECT 'héllo € 😀';\nALTER TABLE t ADD COLUMN a int;\n"
    first, second = split_statements(src)
    assert first.sql == "SELECT 'héllo € 😀'"
    assert (first.start, first.end) == (0, 18)
    assert second.sql == "ALTER TABLE t ADD COLUMN a int"
    assert src[second.start : second.end] == second.sql
    assert (second.start, second.line) == (20, 2)


def test_lines_skip_blank_lines_and_comments() -> None:
    """A statement's line is that of its first token, past comments and blank lines."""
    src = (
        "-- leading comment\n"
        "\n"
        "CREATE TABLE a (id int); -- trailing\n"
        "/* block\n"
        "   comment */\n"
        "INSERT INTO a\n"
        "VALUES (1) -- before semicolon\n"
        ";\n"
        "SELECT 1"
    )
    stmts = split_statements(src)
    assert [s.line for s in stmts] == [3, 6, 9]
    assert [s.sql for s in stmts] == [
        "CREATE TABLE a (id int)",
        "INSERT INTO a\nVALUES (1)",
        "SELECT 1",
    ]
    assert all(src[s.start : s.end] == s.sql for s in stmts)


def test_function_body_semicolons_do_not_split() -> None:
    """Semicolons inside a function body do not end the statement."""
    src = (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\n"
        "CREATE FUNCTION g() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;"
    )
    stmts = split_statements(src)
    assert [s.node_type for s in stmts] == ["CreateFunctionStmt"] * 2
    assert stmts[0].sql.endswith("END")
    assert stmts[1].line == 2


@pytest.mark.parametrize("sql", ["", "   \n\t", "-- nothing\n/* at all */", ";;"])
def test_empty_input(sql: str) -> None:
    """Input without statements splits into an empty list."""
    assert split_statements(sql) == []


def test_syntax_error_details() -> None:
    """A syntax error carries the message, position, line and statement."""
    src = "CREATE TABLE a (id int);\n-- comment\nSELEC 1 FROM a;\nSELECT 2;"
    with pytest.raises(SqlSyntaxError) as info:
        split_statements(src)
    err = info.value
    assert err.message == 'syntax error at or near "SELEC"'
    assert err.position == src.index("SELEC ")
    assert err.line == 3
    assert err.statement == "SELEC 1 FROM a"
    assert str(err) == 'syntax error at or near "SELEC" at line 3: SELEC 1 FROM a'
    assert isinstance(err, ValueError)


def test_syntax_error_position_after_non_ascii() -> None:
    """The error position is a character offset even after non-ASCII text."""
    src = "SELECT '😀 é';\nSELECT a FROM;"
    with pytest.raises(SqlSyntaxError) as info:
        split_statements(src)
    assert info.value.position == src.rindex(";")
    assert (info.value.line, info.value.statement) == (2, "SELECT a FROM")


def test_syntax_error_at_end_of_input() -> None:
    """An error at the end of input points at the end of the text."""
    src = "SELECT 1;\nSELECT 1 +\n"
    with pytest.raises(SqlSyntaxError) as info:
        split_statements(src)
    assert (info.value.position, info.value.line) == (len(src.rstrip()), 2)
    assert info.value.statement == "SELECT 1 +"


def test_syntax_error_unterminated_literal() -> None:
    """An unterminated literal is reported with its statement, on one line."""
    with pytest.raises(SqlSyntaxError) as info:
        split_statements("SELECT 1;\nSELECT 'abc\n  def")
    err = info.value
    assert (err.line, err.statement) == (2, "SELECT 'abc\n  def")
    assert "\n" not in str(err)
    assert str(err).endswith(": SELECT 'abc def")


def test_syntax_error_pickles() -> None:
    """SqlSyntaxError survives pickling with its attributes."""
    err = SqlSyntaxError("boom", position=3, line=1, statement="SELECT boom")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.message, copy.position, copy.line, copy.statement) == (
        "boom",
        3,
        1,
        "SELECT boom",
    )
    assert str(copy) == str(err) == "boom at line 1: SELECT boom"


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("SELECT 1", "select   1"),
        ("SELECT 1", "SELECT 1;"),
        ("SELECT 1", "SELECT 1 ; ;"),
        ("SELECT 1", "-- comment\nSELECT /* inline */ 1 -- trailing"),
        ("ALTER TABLE Foo ADD COLUMN Bar INT", "alter table foo add column bar int"),
        ("SELECT a,b FROM t", "SELECT a , b\nFROM t"),
        (
            "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1);",
            "create table t(a int); insert into t values(1)",
        ),
    ],
)
def test_normalize_equal(left: str, right: str) -> None:
    """Whitespace, comments, keyword case and a trailing ';' do not matter."""
    assert normalize_sql(left) == normalize_sql(right)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("SELECT 'a'", "SELECT 'A'"),
        ("SELECT 'a b'", "SELECT 'a  b'"),
        ('SELECT "Col" FROM t', "SELECT col FROM t"),
        ("SELECT 1.0", "SELECT 1.00"),
        ("ALTER TABLE t ADD COLUMN a int", "ALTER TABLE t ADD COLUMN b int"),
        ("ALTER TABLE t ADD COLUMN a int", "ALTER TABLE t ADD COLUMN a bigint"),
        ("SELECT $$ x $$", "SELECT $$x$$"),
        ("SELECT 1; SELECT 2", "SELECT 1 SELECT 2"),
    ],
)
def test_normalize_different(left: str, right: str) -> None:
    """Any real change to the SQL changes its normal form."""
    assert normalize_sql(left) != normalize_sql(right)


def test_normalize_output() -> None:
    """The normal form is the token texts joined by single spaces."""
    sql = "SELECT  A, \"B\" FROM Tbl -- x\n WHERE x = 'Ab' AND É = 1;"
    assert normalize_sql(sql) == "select a , \"B\" from tbl where x = 'Ab' and É = 1"


def test_normalize_falls_back_when_scanning_fails() -> None:
    """Unscannable text falls back to a whitespace collapse."""
    assert normalize_sql("SELECT  'unterminated\n  x") == "SELECT 'unterminated x"


def test_has_dml_by_kind_or_kinds() -> None:
    """has_dml is true for DML statements and for statements containing DML."""
    assert has_dml(one("DELETE FROM t"))
    assert has_dml(one("EXPLAIN ANALYZE UPDATE t SET a = 1"))
    assert not has_dml(one("ALTER TABLE t ADD COLUMN a int"))
