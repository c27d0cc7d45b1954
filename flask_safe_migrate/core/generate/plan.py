"""The safe form of each change Alembic reports: its phase-split generated steps.

Every change becomes steps that never hold a lock a live query waits on for longer
than the lock timeout: indexes are built concurrently, constraints are added
``NOT VALID`` and validated in a later step, ``NOT NULL`` comes from a validated
``CHECK``, and destructive changes are written commented out unless allowed.
"""

from __future__ import annotations

import re
import typing as t

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.named_types import CreateEnumType

from .compare import DatabaseFacts
from .steps import DIALECT
from .steps import GeneratedStep
from .steps import StepKind
from .steps import constraint_name
from .steps import literal
from .steps import quote
from .steps import quote_table

if t.TYPE_CHECKING:
    from alembic.operations import ops

__all__ = ["Planner", "column_type", "plan_steps", "render_default"]

_NOT_NULL_SCAN = (
    "-- safe-migrate: ignore adding-not-nullable-field validated CHECK: no scan\n"
)
_ACCEPTED = (
    "-- safe-migrate: ignore changing-column-type accepted by --allow-destructive\n"
)
_DESTRUCTIVE = (
    "Destructive: uncomment it (or generate with --allow-destructive) once no "
    "deployed code uses it."
)
_EMPTY_TABLE = (
    "{table} was empty when this was generated; with rows, this step fails: give "
    "the column a server default or generate again."
)
_VOLATILE = (
    "A volatile default would rewrite the table: the column is added without it, "
    "the default set for new rows, existing rows backfilled."
)
_NO_DEFAULT = (
    "{table} has rows and the new NOT NULL column has no default: it is added "
    "nullable, backfilled, then made NOT NULL."
)
#: Index options migrate.index(...) cannot express.
_INDEX_OPTIONS = ("using", "include", "ops", "with", "tablespace", "nulls_not_distinct")


def plan_steps(
    operations: t.Sequence[ops.MigrateOperation],
    facts: DatabaseFacts,
    *,
    allow_destructive: bool = False,
) -> list[GeneratedStep]:
    """Return the generated steps of Alembic's ``operations``, in order."""
    planner = Planner(facts, allow_destructive=allow_destructive)
    for op in operations:
        planner.add(op)
    return planner.steps


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def render_default(default: t.Any) -> str | None:
    """The SQL of a server default (a ``DefaultClause``, string or expression)."""
    if default is None or default is False:
        return None
    arg = getattr(default, "arg", default)
    if isinstance(arg, str):
        return literal(arg)
    compiled = arg.compile(dialect=DIALECT, compile_kwargs={"literal_binds": True})
    return str(compiled)


def column_type(type_: sa.types.TypeEngine[t.Any]) -> str:
    """The SQL of a column type."""
    return str(type_.compile(dialect=DIALECT))


class Planner:
    """Turn Alembic operations into generated steps, one handler per operation."""

    def __init__(self, facts: DatabaseFacts, *, allow_destructive: bool) -> None:
        self.facts = facts
        self.allow_destructive = allow_destructive
        self.steps: list[GeneratedStep] = []
        self._enums: set[str] = set()

    def add(self, op: ops.MigrateOperation) -> None:
        """Plan ``op`` (a ``ModifyTableOps`` plans each of its operations)."""
        inner = getattr(op, "ops", None)
        if inner is not None:
            for child in inner:
                self.add(child)
            return
        handler = getattr(self, "_" + _snake(type(op).__name__), None)
        if handler is None:
            self._todo(op)
        else:
            handler(op)

    # -- building blocks ---------------------------------------------------------

    def _sql(self, name: str, change: str, comment: str, *statements: str) -> None:
        self.steps.append(
            GeneratedStep(
                StepKind.SQL, name, change, comment, sql=";\n".join(statements)
            )
        )

    def _destructive(
        self, kind: StepKind, name: str, change: str, why: str, sql: str
    ) -> None:
        self.steps.append(
            GeneratedStep(
                kind,
                name,
                change,
                f"{why} {'' if self.allow_destructive else _DESTRUCTIVE}".strip(),
                sql=sql,
                active=self.allow_destructive,
            )
        )

    def _todo(self, op: ops.MigrateOperation, why: str = "") -> None:
        diff = op.to_diff_tuple() if hasattr(op, "to_diff_tuple") else op
        self.steps.append(
            GeneratedStep(
                StepKind.TODO,
                _snake(type(op).__name__),
                "not handled",
                f"TODO: Alembic's {type(op).__name__} has no safe form here{why}; "
                "write this change by hand.",
                sql=_one_line(diff),
                active=False,
            )
        )

    def _ensure_enums(self, types: t.Iterable[sa.types.TypeEngine[t.Any]]) -> None:
        """Create each native enum type that exists neither in the database nor
        earlier in this module."""
        for type_ in types:
            if not isinstance(type_, sa.Enum) or not type_.native_enum:
                continue
            if type_.name is None:
                continue
            key = f"{type_.schema}.{type_.name}" if type_.schema else type_.name
            if key in self.facts.enum_types or key in self._enums:
                continue
            self._enums.add(key)
            sql = str(CreateEnumType(type_).compile(dialect=DIALECT)).strip()
            self._sql(f"create_type_{type_.name}", "new enum type", "", sql)

    def _comment_sql(
        self, schema: str | None, table: str, column: str | None, text: str | None
    ) -> str:
        target = quote_table(schema, table)
        if column is not None:
            return f"COMMENT ON COLUMN {target}.{quote(column)} IS " + (
                literal(text) if text is not None else "NULL"
            )
        return f"COMMENT ON TABLE {target} IS " + (
            literal(text) if text is not None else "NULL"
        )

    def _not_null(self, schema: str | None, table: str, column: str) -> None:
        """``NOT NULL`` on an existing column without a long lock: a ``CHECK`` added
        ``NOT VALID``, validated (no write lock), then ``SET NOT NULL`` (which uses
        the check instead of a scan) and the check dropped."""
        target = quote_table(schema, table)
        check = quote(constraint_name(table, [column], "not_null"))
        col = quote(column)
        base = f"{table}_{column}"
        self._sql(
            f"{base}_not_null_check",
            "NOT NULL",
            f"{table}.{column} NOT NULL, 1/3: a CHECK added NOT VALID (no scan).",
            f"ALTER TABLE {target} ADD CONSTRAINT {check} CHECK ({col} IS NOT NULL) "
            "NOT VALID",
        )
        self._sql(
            f"{base}_not_null_validate",
            "NOT NULL",
            f"{table}.{column} NOT NULL, 2/3: VALIDATE scans without blocking "
            "reads or writes (a NULL left in the column fails it: backfill first).",
            f"ALTER TABLE {target} VALIDATE CONSTRAINT {check}",
        )
        self._sql(
            f"{base}_set_not_null",
            "NOT NULL",
            f"{table}.{column} NOT NULL, 3/3: SET NOT NULL proves it with the "
            "check (no scan), then the check goes.",
            _NOT_NULL_SCAN + f"ALTER TABLE {target} ALTER COLUMN {col} SET NOT NULL",
            f"ALTER TABLE {target} DROP CONSTRAINT {check}",
        )

    def _backfill(
        self,
        schema: str | None,
        table: str,
        column: str,
        expression: str | None,
        why: str,
    ) -> None:
        key = self.facts.primary_keys.get((schema, table), [])
        qualified = f"{schema}.{table}" if schema else table
        if len(key) != 1:
            self.steps.append(
                GeneratedStep(
                    StepKind.TODO,
                    f"{table}_{column}_backfill",
                    "not handled",
                    f"TODO: fill {qualified}.{column} before its NOT NULL steps: "
                    "the table has no single-column primary key to batch by.",
                    sql=f"UPDATE {quote_table(schema, table)} SET {quote(column)} = "
                    f"... WHERE {quote(column)} IS NULL",
                    active=False,
                )
            )
            return
        value = None
        if expression is None:
            value = re.sub(r"\W", "_", f"{table}_{column}_value").upper()
            expression = "{" + value + "}"
        self.steps.append(
            GeneratedStep(
                StepKind.BACKFILL,
                f"{table}_{column}_backfill",
                "backfill",
                why,
                options={
                    "table": qualified,
                    "key": key[0],
                    "set": f"{quote(column)} = {expression}",
                    "where": f"{quote(column)} IS NULL",
                },
                value=value,
            )
        )

    # -- tables --------------------------------------------------------------------

    def _create_table_op(self, op: ops.CreateTableOp) -> None:
        table = op.to_table()
        self._ensure_enums(c.type for c in table.columns)
        statements = [str(sa.schema.CreateTable(table).compile(dialect=DIALECT))]
        statements[0] = "\n".join(
            line.replace("\t", "    ").rstrip()
            for line in statements[0].strip().splitlines()
        )
        if table.comment is not None:
            statements.append(
                self._comment_sql(table.schema, table.name, None, table.comment)
            )
        for column in table.columns:
            if column.comment is not None:
                statements.append(
                    self._comment_sql(
                        table.schema, table.name, column.name, column.comment
                    )
                )
        self._sql(f"create_{table.name}", "new table", "", *statements)

    def _drop_table_op(self, op: ops.DropTableOp) -> None:
        self._destructive(
            StepKind.SQL,
            f"drop_{op.table_name}",
            "drop table",
            f"The models no longer have {op.table_name}: dropping it deletes its "
            "rows, and deployed code still using it fails.",
            f"DROP TABLE {quote_table(op.schema, op.table_name)}",
        )

    def _create_table_comment_op(self, op: ops.CreateTableCommentOp) -> None:
        self._sql(
            f"{op.table_name}_comment",
            "comment",
            "",
            self._comment_sql(op.schema, op.table_name, None, op.comment),
        )

    def _drop_table_comment_op(self, op: ops.DropTableCommentOp) -> None:
        self._sql(
            f"{op.table_name}_comment",
            "comment",
            "",
            self._comment_sql(op.schema, op.table_name, None, None),
        )

    # -- columns -------------------------------------------------------------------

    def _add_column_op(self, op: ops.AddColumnOp) -> None:
        column, schema, table = op.column, op.schema, op.table_name
        if column.identity is not None or column.computed is not None:
            self._todo(op, " (an identity or generated column rewrites the table)")
            return
        self._ensure_enums([column.type])
        default = render_default(column.server_default)
        add = (
            f"ALTER TABLE {quote_table(schema, table)} ADD COLUMN "
            f"{quote(column.name)} {column_type(column.type)}"
        )
        comments = []
        if column.comment is not None:
            comments.append(
                self._comment_sql(schema, table, column.name, column.comment)
            )
        not_null = "" if column.nullable else " NOT NULL"
        name = f"{table}_add_{column.name}"
        if default is not None and not self.facts.is_volatile(default):
            self._sql(
                name,
                "new column with a constant default",
                "A constant default is stored once (PostgreSQL 11+): no rewrite.",
                f"{add} DEFAULT {default}{not_null}",
                *comments,
            )
        elif default is None and (
            column.nullable or not self.facts.has_rows(schema, table)
        ):
            why = "" if column.nullable else _EMPTY_TABLE.format(table=table)
            change = "new column" if column.nullable else "new NOT NULL column"
            self._sql(name, change, why, add + not_null, *comments)
        else:
            self._add_then_fill(op, default, [add, *comments])

    def _add_then_fill(
        self, op: ops.AddColumnOp, default: str | None, statements: list[str]
    ) -> None:
        """Add the column nullable (and without a volatile default), fill the rows
        in a backfill, then the NOT NULL sequence if the column is NOT NULL."""
        column, schema, table = op.column, op.schema, op.table_name
        if default is not None:
            statements.insert(
                1,
                f"ALTER TABLE {quote_table(schema, table)} ALTER COLUMN "
                f"{quote(column.name)} SET DEFAULT {default}",
            )
            change, why = "new column with a volatile default", _VOLATILE
        else:
            change, why = "new NOT NULL column", _NO_DEFAULT.format(table=table)
        self._sql(f"{table}_add_{column.name}", change, why, *statements)
        self._backfill(
            schema,
            table,
            column.name,
            default,
            f"Fill {table}.{column.name} in the existing rows, in batches.",
        )
        if not column.nullable:
            self._not_null(schema, table, column.name)

    def _drop_column_op(self, op: ops.DropColumnOp) -> None:
        self._destructive(
            StepKind.SQL,
            f"{op.table_name}_drop_{op.column_name}",
            "drop column",
            f"The models no longer have {op.table_name}.{op.column_name}: dropping "
            "it deletes its data (a rename shows up as a drop plus an add: add the "
            "new column, backfill it, switch the code, then drop the old one).",
            f"ALTER TABLE {quote_table(op.schema, op.table_name)} DROP COLUMN "
            f"{quote(op.column_name)}",
        )

    def _alter_column_op(self, op: ops.AlterColumnOp) -> None:
        schema, table, column = op.schema, op.table_name, op.column_name
        target, col = quote_table(schema, table), quote(column)
        if op.modify_type is not None:
            self._ensure_enums([op.modify_type])
            new_type = column_type(op.modify_type)
            self._destructive(
                StepKind.SQL,
                f"{table}_{column}_type",
                "type change",
                f"{table}.{column} becomes {new_type}: most type changes rewrite "
                "the table under an ACCESS EXCLUSIVE lock (expand/contract: add a "
                "new column, backfill it, switch the code, drop the old one).",
                (_ACCEPTED if self.allow_destructive else "")
                + f"ALTER TABLE {target} ALTER COLUMN {col} TYPE {new_type} "
                f"USING {col}::{new_type}",
            )
        statements: list[str] = []
        changes: list[str] = []
        if op.modify_server_default is not False:
            default = render_default(op.modify_server_default)
            statements.append(
                f"ALTER TABLE {target} ALTER COLUMN {col} "
                + (f"SET DEFAULT {default}" if default else "DROP DEFAULT")
            )
            changes.append("server default")
        if op.modify_nullable is True:
            statements.append(f"ALTER TABLE {target} ALTER COLUMN {col} DROP NOT NULL")
            changes.append("drop NOT NULL")
        if op.modify_comment is not False:
            statements.append(
                self._comment_sql(schema, table, column, op.modify_comment)
            )
            changes.append("comment")
        if statements:
            self._sql(
                f"{table}_{column}_" + "_".join(c.split()[-1].lower() for c in changes),
                ", ".join(changes),
                "Catalog-only changes: a brief lock, no scan.",
                *statements,
            )
        if op.modify_nullable is False:
            self._not_null(schema, table, column)

    # -- indexes and constraints -----------------------------------------------------

    def _create_index_op(self, op: ops.CreateIndexOp) -> None:
        index = op.to_index()
        pg = index.dialect_options["postgresql"]
        unsupported = [o for o in _INDEX_OPTIONS if pg.get(o)]
        columns = [
            e.name if isinstance(e, sa.Column) else _one_line(_compile(e))
            for e in index.expressions
        ]
        if unsupported or not index.name:
            self._todo(op, f" (migrate.index cannot express {', '.join(unsupported)})")
            return
        where = pg.get("where")
        qualified = f"{op.schema}.{op.table_name}" if op.schema else op.table_name
        self.steps.append(
            GeneratedStep(
                StepKind.INDEX,
                index.name,
                "new index",
                "Built concurrently, outside any transaction: writes go on.",
                options={
                    "table": qualified,
                    "columns": columns,
                    "unique": bool(index.unique),
                    "where": _one_line(_compile(where)) if where is not None else None,
                    "name": index.name,
                },
            )
        )

    def _drop_index_op(self, op: ops.DropIndexOp) -> None:
        name = str(op.index_name)
        target = f"{quote(op.schema)}.{quote(name)}" if op.schema else quote(name)
        self._destructive(
            StepKind.DROP_INDEX,
            f"drop_{name}",
            "drop index",
            f"The models no longer have the index {name}: queries that use it "
            "slow down (and a unique index stops guarding its columns).",
            f"DROP INDEX CONCURRENTLY IF EXISTS {target}",
        )

    def _create_unique_constraint_op(self, op: ops.CreateUniqueConstraintOp) -> None:
        columns = list(op.columns)
        name = str(op.constraint_name or constraint_name(op.table_name, columns, "key"))
        qualified = f"{op.schema}.{op.table_name}" if op.schema else op.table_name
        self.steps.append(
            GeneratedStep(
                StepKind.INDEX,
                f"{name}_index",
                "new unique constraint",
                "The unique constraint's index, built concurrently (duplicates make "
                "it fail: remove them first).",
                options={
                    "table": qualified,
                    "columns": columns,
                    "unique": True,
                    "where": None,
                    "name": name,
                },
            )
        )
        self._sql(
            name,
            "new unique constraint",
            "The constraint takes over the index built above: a brief lock, no scan.",
            f"ALTER TABLE {quote_table(op.schema, op.table_name)} ADD CONSTRAINT "
            f"{quote(name)} UNIQUE USING INDEX {quote(name)}",
        )

    def _create_foreign_key_op(self, op: ops.CreateForeignKeyOp) -> None:
        local, remote = list(op.local_cols), list(op.remote_cols)
        name = str(
            op.constraint_name or constraint_name(op.source_table, local, "fkey")
        )
        target = quote_table(op.kw.get("source_schema"), op.source_table)
        sql = (
            f"ALTER TABLE {target} ADD CONSTRAINT {quote(name)} FOREIGN KEY "
            f"({', '.join(quote(c) for c in local)}) REFERENCES "
            f"{quote_table(op.kw.get('referent_schema'), op.referent_table)} "
            f"({', '.join(quote(c) for c in remote)})"
        )
        for option, clause in (("ondelete", "ON DELETE"), ("onupdate", "ON UPDATE")):
            if op.kw.get(option):
                sql += f" {clause} {op.kw[option]}"
        self._sql(
            name,
            "new foreign key",
            "Added NOT VALID: new rows are checked at once, existing ones not yet.",
            sql + " NOT VALID",
        )
        self._sql(
            f"{name}_validate",
            "new foreign key",
            "VALIDATE checks the existing rows without blocking writes.",
            f"ALTER TABLE {target} VALIDATE CONSTRAINT {quote(name)}",
        )

    def _drop_constraint_op(self, op: ops.DropConstraintOp) -> None:
        name = str(op.constraint_name)
        self._destructive(
            StepKind.SQL,
            f"drop_{name}",
            "drop constraint",
            f"The models no longer have the constraint {name}: the database stops "
            "guarding what it checked.",
            f"ALTER TABLE {quote_table(op.schema, op.table_name)} DROP CONSTRAINT "
            f"{quote(name)}",
        )


def _compile(clause: t.Any) -> str:
    if isinstance(clause, str):
        return clause
    return str(clause.compile(dialect=DIALECT, compile_kwargs={"literal_binds": True}))
