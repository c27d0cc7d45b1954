"""The boot run: before the first request, never through the app's engine, no leaks."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_safe_migrate import SafeMigrate
from flask_safe_migrate import build_migration_engine
from flask_safe_migrate import extension

from .services import TestDatabase
from .services import wait_until

LEDGER = "SELECT count(*) FROM safe_migrate_ledger"
MIGRATION_BACKENDS = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'safe-migrate'"
)


def _make_app(
    tmp_path: Path, migration_url: str, app_url: str
) -> tuple[Flask, list[int]]:
    """Return an app whose boot run creates a table, and its engine's connects."""
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=app_url, SAFE_MIGRATE_DATABASE_URI=migration_url
    )
    db = SQLAlchemy()
    db.init_app(app)
    connects: list[int] = []
    with app.app_context():
        sa.event.listen(db.engine, "connect", lambda *a: connects.append(1))
    migrate = SafeMigrate()
    migrate.sql(
        "0001_notes", "CREATE TABLE notes (id bigserial PRIMARY KEY, body text)"
    )
    migrate.sql("0002_notes_at", "ALTER TABLE notes ADD COLUMN at timestamptz")
    migrate.init_app(app, db)

    @app.get("/notes")
    def notes() -> dict[str, t.Any]:
        count = db.session.execute(sa.text("SELECT count(*) FROM notes")).scalar()
        return {"count": count}

    return app, connects


class Sockets:
    """Counts the DBAPI connections the migration engines open and close."""

    def __init__(self) -> None:
        self.engines: list[sa.Engine] = []
        self.opened = 0
        self.closed = 0

    def watch(self, engine: sa.Engine) -> None:
        self.engines.append(engine)
        sa.event.listen(engine, "connect", lambda *a: self._count("opened"))
        sa.event.listen(engine, "close", lambda *a: self._count("closed"))
        sa.event.listen(engine, "close_detached", lambda *a: self._count("closed"))

    def _count(self, name: str) -> None:
        setattr(self, name, getattr(self, name) + 1)


@pytest.fixture
def sockets(monkeypatch: pytest.MonkeyPatch) -> Sockets:
    """Watch the migration engines the boot run builds."""
    built = Sockets()
    real = build_migration_engine

    def build(settings: t.Any) -> sa.Engine:
        engine = real(settings)
        built.watch(engine)
        return engine

    monkeypatch.setattr(extension, "build_migration_engine", build)
    return built


def test_boot_runs_before_first_request_without_app_engine(
    database: TestDatabase, tmp_path: Path, sockets: Sockets
) -> None:
    """init_app applies the steps on its own engine; the app's engine opens nothing."""
    app, connects = _make_app(tmp_path, database.bouncer_url, database.direct_url)
    assert connects == []
    assert database.scalar(LEDGER) == 2
    assert len(sockets.engines) == 1
    assert sockets.opened >= 1
    assert sockets.closed == sockets.opened  # the pool was disposed
    assert app.test_client().get("/notes").json == {"count": 0}
    assert connects == [1]


def test_boot_leaves_no_migration_connection(
    database: TestDatabase, tmp_path: Path, sockets: Sockets
) -> None:
    """After a direct-URL boot run no safe-migrate backend is left on the server."""
    _make_app(tmp_path, database.direct_url, database.direct_url)
    wait_until(
        lambda: database.scalar(MIGRATION_BACKENDS) == 0,
        5,
        message="no safe-migrate backend",
    )
    assert sockets.closed == sockets.opened


def test_second_boot_is_up_to_date(
    database: TestDatabase,
    tmp_path: Path,
    sockets: Sockets,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second app booting on a migrated database applies nothing."""
    _make_app(tmp_path, database.bouncer_url, database.direct_url)
    caplog.set_level("INFO", logger="flask_safe_migrate")
    _make_app(tmp_path, database.bouncer_url, database.direct_url)
    assert "safe-migrate: up to date" in caplog.text
    assert database.scalar(LEDGER) == 2


def test_on_boot_all_runs_the_index_and_backfill_phases_too(
    database: TestDatabase, tmp_path: Path
) -> None:
    """SAFE_MIGRATE_ON_BOOT=all: schema, then index, then backfill, before serving;
    the default (schema) leaves the other two phases to the CLI."""
    database.postgres.execute(
        "CREATE TABLE notes (id bigserial PRIMARY KEY, body text); "
        "INSERT INTO notes (body) SELECT 'x' FROM generate_series(1, 500)",
        dbname=database.name,
    )
    steps: list[tuple[str, str]] = []
    for on_boot in ("schema", "all"):
        app = Flask(__name__, instance_path=str(tmp_path / on_boot))
        app.config.update(
            SAFE_MIGRATE_DATABASE_URI=database.bouncer_url,
            SAFE_MIGRATE_ON_BOOT=on_boot,
        )
        migrate = SafeMigrate()
        migrate.sql("0001_notes_n", "ALTER TABLE notes ADD COLUMN n int")
        migrate.index("0002_notes_body", table="notes", columns=["body"])
        migrate.backfill("0003_notes_n", table="notes", set="n = 1", where="n IS NULL")
        migrate.init_app(app)
        steps.append(
            (
                on_boot,
                ",".join(
                    r[0]
                    for r in database.query(
                        "SELECT step_id FROM safe_migrate_ledger "
                        "WHERE state = 'applied' "
                        "ORDER BY applied_at"
                    )
                ),
            )
        )
    assert steps == [
        ("schema", "0001_notes_n"),
        ("all", "0001_notes_n,0002_notes_body,0003_notes_n"),
    ]
    assert database.scalar("SELECT count(*) FROM notes WHERE n = 1") == 500
