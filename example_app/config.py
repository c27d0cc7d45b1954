"""Configuration of the example app: the database URL and the migration settings."""

from __future__ import annotations

import os
import typing as t

from flask_safe_migrate.core.driver import installed_driver_names


def database_url() -> str:
    """Return ``DATABASE_URL`` (a pooler URL in production) or the embedded server's.

    A bare ``postgresql://`` URL (what Supabase, Neon and Heroku hand out) gets the
    driver flask-safe-migrate would pick (psycopg2 if installed, else psycopg 3), so
    the app's own engine and the migration engine use the same one. Name one to
    choose: ``postgresql+psycopg://`` runs both on psycopg 3.
    """
    url = os.environ.get("DATABASE_URL")
    if not url:
        from .embedded import embedded_database_url

        url = embedded_database_url()
    for bare in ("postgres://", "postgresql://"):
        if url.startswith(bare):
            return f"postgresql+{installed_driver_names()[0]}://" + url[len(bare) :]
    return url


def settings() -> dict[str, t.Any]:
    """Return the Flask config of the example app."""
    return {
        "SQLALCHEMY_DATABASE_URI": database_url(),
        # The hand-written steps, then the package generate writes to; init_app
        # imports them in this order (a package's modules in file name order).
        "SAFE_MIGRATE_STEP_MODULES": ["example_app.steps", "example_app.migrations"],
    }
