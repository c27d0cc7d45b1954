"""The comparison of models and database: Alembic's autogenerate, plus the facts
the safe forms depend on (which tables hold rows, which types and functions exist).
"""

from __future__ import annotations

import fnmatch
import re
import typing as t
from dataclasses import dataclass
from dataclasses import field

import sqlalchemy as sa

from ..revisions import INSTALL_HINT

if t.TYPE_CHECKING:
    from alembic.operations.ops import MigrateOperation

__all__ = [
    "Comparison",
    "DatabaseFacts",
    "compare",
    "is_excluded",
    "read_facts",
    "require_alembic",
]

_FUNCTION_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def require_alembic() -> None:
    """Fail with the install command when Alembic (an optional dependency) is missing.

    :raises ImportError: Alembic is not installed.
    """
    try:
        import alembic  # noqa: F401
    except ImportError:
        raise ImportError(
            f"flask safe-migrate generate needs Alembic, which is not installed: "
            f"{INSTALL_HINT}"
        ) from None


@dataclass
class DatabaseFacts:
    """What the database holds that decides the safe form of a change."""

    #: ``(schema, table)`` of the compared tables that hold at least one row.
    tables_with_rows: set[tuple[str | None, str]] = field(default_factory=set)
    #: ``(schema, table)`` -> the primary key columns of each compared table.
    primary_keys: dict[tuple[str | None, str], list[str]] = field(default_factory=dict)
    #: Names of the enum types that exist (``schema.name`` or ``name``).
    enum_types: set[str] = field(default_factory=set)
    #: Names of the functions PostgreSQL marks volatile (``random``, ``nextval``).
    volatile_functions: set[str] = field(default_factory=set)

    def has_rows(self, schema: str | None, table: str) -> bool:
        """Whether ``table`` held a row when compared."""
        return (schema, table) in self.tables_with_rows

    def is_volatile(self, expression: str) -> bool:
        """Whether ``expression`` calls a volatile function (a per-row value)."""
        names = {m.group(1).lower() for m in _FUNCTION_CALL.finditer(expression)}
        return bool(names & self.volatile_functions)


@dataclass
class Comparison:
    """Alembic's operations (in its order) and the facts they were compared with."""

    ops: list[MigrateOperation]
    facts: DatabaseFacts


def is_excluded(name: str, schema: str | None, patterns: t.Sequence[str]) -> bool:
    """Whether the table ``name`` matches one of ``patterns`` (``fnmatch``, with
    or without its schema)."""
    qualified = f"{schema}.{name}" if schema else name
    return any(
        fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(qualified, p)
        for p in patterns
    )


def compare(
    connection: sa.Connection,
    metadata: sa.MetaData,
    *,
    exclude: t.Sequence[str] = (),
) -> Comparison:
    """Compare ``metadata`` with the database of ``connection`` (one transaction).

    Types, server defaults and comments are compared; tables matching ``exclude``
    are ignored on both sides.
    """
    from alembic.autogenerate import produce_migrations
    from alembic.migration import MigrationContext

    schemas = {tbl.schema for tbl in metadata.tables.values()}

    def include_name(
        name: str | None, type_: str, parent: t.Mapping[str, str | None]
    ) -> bool:
        if type_ == "schema":
            return name in schemas
        if type_ == "table":
            return not is_excluded(str(name), parent.get("schema_name"), exclude)
        return True

    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            "include_schemas": schemas != {None},
            "include_name": include_name,
        },
    )
    script = produce_migrations(context, metadata)
    ops = list(script.upgrade_ops.ops) if script.upgrade_ops else []
    return Comparison(ops=ops, facts=read_facts(connection, metadata))


def read_facts(connection: sa.Connection, metadata: sa.MetaData) -> DatabaseFacts:
    """Read which tables of ``metadata`` hold rows, the enum types, and the
    volatile functions."""
    facts = DatabaseFacts()
    inspector = sa.inspect(connection)
    preparer = connection.dialect.identifier_preparer
    for table in metadata.tables.values():
        if not inspector.has_table(table.name, schema=table.schema):
            continue
        pk = inspector.get_pk_constraint(table.name, schema=table.schema)
        facts.primary_keys[(table.schema, table.name)] = list(
            pk.get("constrained_columns") or []
        )
        name = preparer.format_table(table)
        if connection.exec_driver_sql(f"SELECT EXISTS (SELECT FROM {name})").scalar():
            facts.tables_with_rows.add((table.schema, table.name))
    for schema, enum_name in connection.execute(
        sa.text(
            "SELECT n.nspname, t.typname FROM pg_type t JOIN pg_namespace n "
            "ON n.oid = t.typnamespace WHERE t.typtype = 'e'"
        )
    ):
        facts.enum_types.update({f"{schema}.{enum_name}", enum_name})
    facts.volatile_functions = set(
        connection.execute(
            sa.text("SELECT DISTINCT proname FROM pg_proc WHERE provolatile = 'v'")
        ).scalars()
    )
    return facts
