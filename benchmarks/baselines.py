"""The three ways to migrate on boot, as a Flask app would run them.

- ``safe_migrate``: ``SafeMigrate(registry=...).init_app(app, db)``, which runs the
  schema phase on boot through its own migration engine.
- ``naive``: the startup script such apps use today: ``db.session.execute`` of every
  idempotent statement on every boot, each committed on its own (so one failing
  statement does not undo the ones before it).
- ``alembic``: the same steps as Alembic revisions, applied on boot by
  Flask-Migrate's ``upgrade()`` with ``transaction_per_migration=True`` (each
  revision and its ``alembic_version`` update in one transaction).
"""

from __future__ import annotations

import contextlib
import io
import typing as t
from pathlib import Path

import flask_migrate  # type: ignore[import-untyped]  # ships no type information
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_safe_migrate import SafeMigrate
from flask_safe_migrate import StepRegistry

#: Statements, as (step id, SQL), in order.
Steps = list[tuple[str, str]]

_REVISION_TEMPLATE = '''"""{step_id}"""

from alembic import op

revision = "{revision}"
down_revision = {down_revision}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute({sql!r})


def downgrade() -> None:
    pass
'''


def synthetic_steps(n: int) -> Steps:
    """``n`` idempotent schema steps: a table every 10 steps, then 9 columns on it."""
    steps: Steps = []
    for i in range(n):
        table = f"bench_{i // 10:04d}"
        if i % 10 == 0:
            steps.append(
                (
                    f"{i:05d}_create_{table}",
                    f"CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY)",
                )
            )
        else:
            steps.append(
                (
                    f"{i:05d}_{table}_c{i}",
                    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS c{i} integer",
                )
            )
    return steps


# --------------------------------------------------------------------- safe_migrate


def registry_of(steps: Steps) -> StepRegistry:
    """A registry with one SQL schema step per statement."""
    registry = StepRegistry()
    for step_id, sql in steps:
        registry.sql(step_id, sql)
    return registry


def boot_safe_migrate(url: str, registry: StepRegistry) -> None:
    """Create an app whose ``init_app`` runs the pending schema steps (the boot run)."""
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=url, SAFE_MIGRATE_ON_BOOT="schema")
    db = SQLAlchemy()
    db.init_app(app)
    SafeMigrate(registry=registry).init_app(app, db)


# --------------------------------------------------------------------------- naive


def boot_naive(
    url: str, statements: t.Sequence[str], *, commit_each: bool = True
) -> None:
    """Create an app and run every statement through ``db.session``, as on each boot.

    ``commit_each=False`` is the variant with one commit at the end.
    """
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    db = SQLAlchemy()
    db.init_app(app)
    with app.app_context():
        try:
            for sql in statements:
                db.session.execute(sa.text(sql))
                if commit_each:
                    db.session.commit()
            db.session.commit()
        finally:
            db.session.remove()
            db.engine.dispose()


# ------------------------------------------------------------------------- alembic


def init_alembic_directory(directory: Path) -> None:
    """``flask db init`` into ``directory``, with Alembic's INFO lines turned off."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg2://unused/unused"
    db = SQLAlchemy()
    db.init_app(app)
    flask_migrate.Migrate(app, db, directory=str(directory))
    with app.app_context(), contextlib.redirect_stdout(io.StringIO()):
        flask_migrate.init(directory=str(directory))
    ini = directory / "alembic.ini"
    ini.write_text(ini.read_text().replace("level = INFO", "level = WARN"))


def write_revisions(directory: Path, steps: Steps) -> None:
    """One revision file per step, chained in order, each running its SQL."""
    versions = directory / "versions"
    previous: str | None = None
    for number, (step_id, sql) in enumerate(steps):
        revision = f"r{number:05d}"
        (versions / f"{revision}_{step_id}.py").write_text(
            _REVISION_TEMPLATE.format(
                step_id=step_id,
                revision=revision,
                down_revision=repr(previous),
                sql=sql,
            )
        )
        previous = revision


def alembic_app(url: str, directory: Path) -> tuple[Flask, SQLAlchemy]:
    """An app with Flask-Migrate set up on ``directory``, one transaction a revision."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    db = SQLAlchemy()
    db.init_app(app)
    flask_migrate.Migrate(
        app, db, directory=str(directory), transaction_per_migration=True
    )
    return app, db


def boot_alembic(url: str, directory: Path) -> None:
    """Create an app and run ``flask_migrate.upgrade()`` in it, as on each boot."""
    app, db = alembic_app(url, directory)
    with app.app_context():
        try:
            flask_migrate.upgrade()
        finally:
            db.engine.dispose()
