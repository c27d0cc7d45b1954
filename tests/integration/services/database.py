"""One per-test database, as the ``database`` fixture hands it to a test."""

from __future__ import annotations

import dataclasses
import typing as t

import psycopg2.sql

from .common import Row
from .postgres import Postgres


@dataclasses.dataclass
class TestDatabase:
    """One per-test database, reachable directly and through PgBouncer."""

    __test__: t.ClassVar[bool] = False  # not a pytest test class

    name: str
    direct_url: str
    bouncer_url: str
    postgres: Postgres

    def query(
        self, sql: str | psycopg2.sql.Composable, params: t.Any = None
    ) -> list[Row]:
        """Run ``sql`` on a fresh direct autocommit connection and return its rows."""
        return self.postgres.execute(sql, params, dbname=self.name)

    def scalar(self, sql: str, params: t.Any = None) -> t.Any:
        """Return the first column of the first row of ``sql``, or None."""
        rows = self.query(sql, params)
        return rows[0][0] if rows else None
