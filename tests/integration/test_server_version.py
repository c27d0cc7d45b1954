"""A server older than PostgreSQL 13 is refused: by a run before it writes anything,
and by ``doctor``. Against a real PostgreSQL 11 (``scripts/install-pg.sh 11``)."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.commands import doctor
from flask_safe_migrate.core.engine import build_migration_engine
from flask_safe_migrate.core.exceptions import UnsupportedServerError
from flask_safe_migrate.core.runner import Runner
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import StepRegistry

from .matrix import require
from .services import Postgres
from .services import find_pg_bindir

OLD_MAJOR = 11


@pytest.fixture(scope="module")
def old_postgres() -> t.Iterator[Postgres]:
    """Give a PostgreSQL 11 cluster, from a Python package."""
    bindir = find_pg_bindir(OLD_MAJOR)
    if bindir is None:
        require([f"PostgreSQL {OLD_MAJOR} (bash scripts/install-pg.sh {OLD_MAJOR})"])
    with Postgres(bindir=bindir) as server:
        yield server


@pytest.fixture
def old_settings(old_postgres: Postgres, url_driver: str) -> MigrateSettings:
    """Give settings for PostgreSQL 11, directly (no pooler needed), on each driver."""
    return MigrateSettings(database_uri=old_postgres.url("postgres", driver=url_driver))


@pytest.fixture
def old_engine(old_settings: MigrateSettings) -> t.Iterator[sa.Engine]:
    """Give the migration engine on PostgreSQL 11."""
    engine = build_migration_engine(old_settings)
    yield engine
    engine.dispose()


def test_a_run_on_postgresql_11_is_refused_before_writing(
    old_postgres: Postgres, old_settings: MigrateSettings, old_engine: sa.Engine
) -> None:
    """The run stops with one line naming the version; no ledger, no step applied."""
    registry = StepRegistry()
    registry.sql("0001_t", "CREATE TABLE t (id int)")
    with pytest.raises(UnsupportedServerError) as info:
        Runner(old_settings, registry, old_engine).run([Phase.SCHEMA])
    assert str(info.value).startswith("PostgreSQL 11.13 is not supported")
    assert "PostgreSQL 13 or newer" in str(info.value)
    tables = old_postgres.execute(
        "SELECT count(*) FROM pg_tables WHERE tablename IN ('t', 'safe_migrate_ledger')"
    )
    assert tables == [(0,)]


def test_doctor_on_postgresql_11_fails_the_server_check(
    old_settings: MigrateSettings, old_engine: sa.Engine
) -> None:
    """doctor's server check fails and says why."""
    report = doctor(old_settings, old_engine)
    server = next(c for c in report.checks if c.name == "server")
    assert not server.ok
    assert "PostgreSQL 11.13 is not supported" in server.detail
    assert not report.ok
