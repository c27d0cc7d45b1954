"""The example CRM's app factory: Flask, Flask-SQLAlchemy and SafeMigrate."""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from flask import Flask

from flask_safe_migrate import SafeMigrate

from . import config
from .models import db

migrate = SafeMigrate()


def create_app(test_config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Create the app; ``init_app`` applies the pending schema steps before serving."""
    app = Flask(__name__)
    app.config.update(config.settings())
    if test_config:
        app.config.update(test_config)
    db.init_app(app)
    migrate.init_app(app, db)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/leads")
    def leads() -> list[dict[str, t.Any]]:
        rows = db.session.execute(
            sa.text("SELECT id, name, email, order_index FROM leads ORDER BY id")
        )
        return [dict(row._mapping) for row in rows]

    return app
