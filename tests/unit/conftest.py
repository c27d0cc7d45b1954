"""Fixtures of the unit tests: a fresh Flask app per test, no database."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask

from flask_safe_migrate.core.settings import MigrateSettings

URL = "postgresql://app:s3cret@db.example.com:6543/crm"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep SAFE_MIGRATE_* environment variables of the shell out of the tests."""
    for key in MigrateSettings.keys():  # noqa: SIM118  # a classmethod, not a dict
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Flask:
    """Give a fresh Flask app with a PostgreSQL URL and no boot run."""
    app = Flask(request.module.__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(SQLALCHEMY_DATABASE_URI=URL, SAFE_MIGRATE_ON_BOOT="off")
    return app


@pytest.fixture
def config() -> dict[str, t.Any]:
    """Give extra config for an app."""
    return {}
