"""The app: Flask-SQLAlchemy models, Flask-Migrate, and the two lines of the switch.

Configured from the environment: ``DATABASE_URL``; ``SAFE_MIGRATE_*`` as usual.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm
from flask import Flask
from flask_migrate import Migrate  # type: ignore[import-untyped]  # untyped
from flask_sqlalchemy import SQLAlchemy

from flask_safe_migrate import SafeMigrate

MIGRATIONS = Path(__file__).parent / "migrations"

#: The one revision that changes data (it seeds the roles).
SEED_REVISION = "0a1b2c3d4e08"

db = SQLAlchemy()
migrate = Migrate(directory=str(MIGRATIONS))
safe_migrate = SafeMigrate()
safe_migrate.alembic(MIGRATIONS, categories={SEED_REVISION: "seed"})

followers = db.Table(
    "followers",
    sa.Column("follower_id", sa.Integer, sa.ForeignKey("user.id"), primary_key=True),
    sa.Column("followed_id", sa.Integer, sa.ForeignKey("user.id"), primary_key=True),
)


class Role(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy model
    """A user's role."""

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(primary_key=True)
    name: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(64))


class User(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy model
    """A user of the microblog."""

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(primary_key=True)
    username: sa_orm.Mapped[str] = sa_orm.mapped_column(
        sa.String(64), index=True, unique=True
    )
    email: sa_orm.Mapped[str] = sa_orm.mapped_column(
        sa.String(254), index=True, unique=True
    )
    password_hash: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.String(256))
    about_me: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.String(140))
    last_seen: sa_orm.Mapped[datetime | None]
    role_id: sa_orm.Mapped[int | None] = sa_orm.mapped_column(sa.ForeignKey("role.id"))
    token: sa_orm.Mapped[str | None] = sa_orm.mapped_column(
        sa.String(32), index=True, unique=True
    )
    token_expiration: sa_orm.Mapped[datetime | None]


class Post(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy model
    """A post."""

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(primary_key=True)
    body: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.String(280))
    timestamp: sa_orm.Mapped[datetime] = sa_orm.mapped_column(index=True)
    user_id: sa_orm.Mapped[int] = sa_orm.mapped_column(
        sa.ForeignKey("user.id"), index=True
    )
    language: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.String(5), index=True)


def create_app() -> Flask:
    """The app factory; ``init_app`` applies the pending revisions on boot."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    db.init_app(app)
    migrate.init_app(app, db)
    safe_migrate.init_app(app, db)
    return app
