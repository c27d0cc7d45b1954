"""The migration engine's URL handling and connection settings (no connection made)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.engine import build_migration_engine
from flask_safe_migrate.core.engine import parse_database_url
from flask_safe_migrate.core.engine import safe_url
from flask_safe_migrate.core.exceptions import ConfigurationError
from flask_safe_migrate.core.settings import MigrateSettings

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{SECRET}@db.example.com:6543/postgres?sslmode=require",
        f"postgres://app:{SECRET}@db.example.com/postgres",
        f"postgresql+psycopg2://app:{SECRET}@db.example.com/postgres",
    ],
)
def test_bare_urls_use_psycopg2(url: str) -> None:
    """Bare postgresql:// and Heroku's postgres:// are pinned to psycopg2."""
    assert parse_database_url(url).drivername == "postgresql+psycopg2"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        (None, "no database URL"),
        ("   ", "no database URL"),
        ("not a url", "malformed database URL"),
        ("sqlite:///app.db", "is not a PostgreSQL URL"),
        (f"mysql://u:{SECRET}@h/db", "is not a PostgreSQL URL"),
        (f"postgresql+asyncpg://u:{SECRET}@h/db", "is not supported"),
        (f"postgresql://u:{SECRET}@/db", "names no host"),
    ],
)
def test_bad_urls_name_the_key_and_hide_the_password(
    url: str | None, fragment: str
) -> None:
    """A bad URL is one clear line naming the setting, never showing the password."""
    with pytest.raises(ConfigurationError) as info:
        parse_database_url(url)
    message = str(info.value)
    assert fragment in message
    assert info.value.key == "SAFE_MIGRATE_DATABASE_URI"
    assert message.startswith("SAFE_MIGRATE_DATABASE_URI: ")
    assert SECRET not in message


def test_safe_url_hides_passwords_even_when_unparseable() -> None:
    """safe_url never echoes a secret."""
    assert SECRET not in safe_url(f"postgresql://u:{SECRET}@h/db")
    assert SECRET not in safe_url(f"weird:{SECRET}")


def test_engine_sets_connection_arguments_and_a_tiny_pool() -> None:
    """Keepalives, connect_timeout and application_name are set; URL values win."""
    engine = build_migration_engine(
        MigrateSettings(
            database_uri="postgresql://u:p@h/db?application_name=mine",
            connect_timeout_seconds=4,
        )
    )
    args = engine.dialect.create_connect_args(engine.url)[1]
    assert args["application_name"] == "mine"
    pool = engine.pool
    assert isinstance(pool, sa.pool.QueuePool)
    assert pool.size() == 1
    engine.dispose()


def test_engine_connect_args_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults reach psycopg2's connect arguments."""
    seen: dict[str, object] = {}
    real = sa.create_engine

    def spy(url: sa.URL, **kwargs: object) -> sa.Engine:
        seen.update(kwargs)
        return real(url, **kwargs)

    monkeypatch.setattr(sa, "create_engine", spy)
    build_migration_engine(
        MigrateSettings(database_uri="postgresql://u:p@h/db")
    ).dispose()
    args = seen["connect_args"]
    assert isinstance(args, dict)
    assert args["application_name"] == "safe-migrate"
    assert args["keepalives"] == 1
    assert args["connect_timeout"] == 10
    assert seen["pool_size"] == 1
