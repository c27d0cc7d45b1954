"""GeneratedStep: one step of a generated module, before it is written as Python."""

from __future__ import annotations

import enum
import re
import typing as t
from dataclasses import dataclass

from sqlalchemy.dialects import postgresql

__all__ = [
    "DIALECT",
    "GeneratedStep",
    "StepKind",
    "constraint_name",
    "literal",
    "quote",
    "quote_table",
]

#: The dialect every generated statement is compiled for.
DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]  # untyped in SA


class StepKind(enum.Enum):
    """How a generated step is registered."""

    #: ``migrate.sql(id, sql)``: a schema step.
    SQL = "sql"
    #: ``migrate.index(id, table=..., columns=...)``: a concurrent build.
    INDEX = "index"
    #: ``@migrate.index(id)`` around ``DROP INDEX CONCURRENTLY``.
    DROP_INDEX = "drop_index"
    #: ``migrate.backfill(id, table=..., set=...)``: keyset batches.
    BACKFILL = "backfill"
    #: A comment only: a change Alembic reported that has no safe form here.
    TODO = "todo"


@dataclass(frozen=True)
class GeneratedStep:
    """One step of a generated module.

    :param kind: how it is registered.
    :param name: the end of its id (``users_add_email``).
    :param change: the change kind it belongs to (``new column``), for the summary.
    :param comment: why it has this form; written above it.
    :param sql: the statement(s) of a schema step, a ``DROP INDEX``, or a TODO's text.
    :param options: the keyword arguments of ``migrate.index``/``migrate.backfill``.
    :param value: a backfill's TODO: the constant the module refuses to load without.
    :param active: False writes it commented out (a destructive change).
    """

    kind: StepKind
    name: str
    change: str
    comment: str
    sql: str = ""
    options: t.Mapping[str, t.Any] | None = None
    value: str | None = None
    active: bool = True


def quote(name: str) -> str:
    """Quote an identifier only where PostgreSQL needs it (``users``, ``"Order"``)."""
    return str(DIALECT.identifier_preparer.quote(name))


def quote_table(schema: str | None, table: str) -> str:
    """Quote a table name with its schema, if any."""
    return f"{quote(schema)}.{quote(table)}" if schema else quote(table)


def literal(text: str) -> str:
    """A SQL string literal (``standard_conforming_strings`` is on since 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def constraint_name(table: str, columns: t.Sequence[str], suffix: str) -> str:
    """PostgreSQL's own default name: ``<table>_<col>_<suffix>``, at most 63 bytes."""
    name = "_".join([table, *columns, suffix])
    if len(name.encode()) <= 63:
        return name
    head = re.sub(r"_+$", "", name.encode()[: 62 - len(suffix)].decode(errors="ignore"))
    return f"{head}_{suffix}"
