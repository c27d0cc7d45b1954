"""A database's schema read from the catalogs, to compare two databases' schemas."""

from __future__ import annotations

import typing as t

from .services import TestDatabase

#: Tables of the migrator itself, not of the models.
_OURS = "safe_migrate_%"

_QUERIES = {
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
               col_description(c.oid, a.attnum)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0
          AND NOT a.attisdropped AND c.relname NOT LIKE %(ours)s
        ORDER BY 1, 2
    """,
    "constraints": """
        SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid),
               k.convalidated
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relname NOT LIKE %(ours)s
        ORDER BY 1, 2
    """,
    "indexes": """
        SELECT tablename, indexname, indexdef, i.indisvalid
        FROM pg_indexes x
        JOIN pg_class ic ON ic.relname = x.indexname
        JOIN pg_index i ON i.indexrelid = ic.oid
        WHERE schemaname = 'public' AND tablename NOT LIKE %(ours)s
        ORDER BY 1, 2
    """,
    "tables": """
        SELECT c.relname, obj_description(c.oid, 'pg_class')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname NOT LIKE %(ours)s
        ORDER BY 1
    """,
    "enums": """
        SELECT t.typname, e.enumlabel, e.enumsortorder
        FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
        ORDER BY 1, 3
    """,
}


def schema_of(db: TestDatabase) -> dict[str, list[tuple[t.Any, ...]]]:
    """Tables, columns (type, NOT NULL, default, comment), constraints (with
    validity), indexes (with validity) and enum types of ``db``'s public schema."""
    return {
        name: [tuple(row) for row in db.query(sql, {"ours": _OURS})]
        for name, sql in _QUERIES.items()
    }
