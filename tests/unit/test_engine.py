"""The migration engine's URL handling and connection settings (no connection made)."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa

from flask_safe_migrate.core import engine as engine_module
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
def test_bare_urls_prefer_psycopg2(url: str) -> None:
    """Bare postgresql:// and Heroku's postgres:// get psycopg2 when it is installed."""
    assert parse_database_url(url).drivername == "postgresql+psycopg2"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://app:{SECRET}@db.example.com/postgres",
        f"postgres+psycopg://app:{SECRET}@db.example.com/postgres",
    ],
)
def test_psycopg3_urls_keep_their_driver(url: str) -> None:
    """postgresql+psycopg:// (psycopg 3) is a supported driver of its own."""
    assert parse_database_url(url).drivername == "postgresql+psycopg"


def test_bare_url_falls_back_to_psycopg3(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg2 installed, a bare URL gets psycopg 3."""
    monkeypatch.setattr(engine_module, "installed_driver_names", lambda: ["psycopg"])
    url = parse_database_url("postgresql://u:p@h/db")
    assert url.drivername == "postgresql+psycopg"


def test_no_driver_installed_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With neither driver installed, the error says what to install."""
    monkeypatch.setattr(engine_module, "installed_driver_names", lambda: [])
    with pytest.raises(ConfigurationError, match="no PostgreSQL driver installed"):
        parse_database_url(f"postgresql://u:{SECRET}@h/db")


def test_missing_named_driver_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A URL naming psycopg 3 when only psycopg2 is installed names the extra."""
    monkeypatch.setattr(engine_module, "installed_driver_names", lambda: ["psycopg2"])
    with pytest.raises(ConfigurationError) as info:
        parse_database_url(f"postgresql+psycopg://u:{SECRET}@h/db")
    assert "flask-safe-migrate[psycopg]" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        (None, "no database URL"),
        ("   ", "no database URL"),
        ("not a url", "malformed database URL"),
        ("sqlite:///app.db", "is not a PostgreSQL URL"),
        (f"mysql://u:{SECRET}@h/db", "is not a PostgreSQL URL"),
        (f"postgresql+asyncpg://u:{SECRET}@h/db", "is not supported"),
        (f"postgresql+pg8000://u:{SECRET}@h/db", "is not supported"),
        (f"postgresql+psycopg_async://u:{SECRET}@h/db", "is not supported"),
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


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [("postgresql+psycopg2", {}), ("postgresql+psycopg", {"prepare_threshold": None})],
)
def test_psycopg3_engine_never_prepares_on_the_server(
    monkeypatch: pytest.MonkeyPatch, scheme: str, expected: dict[str, object]
) -> None:
    """psycopg 3 gets prepare_threshold=None; psycopg2 has no such argument."""
    seen: dict[str, t.Any] = {}
    real = sa.create_engine

    def spy(url: sa.URL, **kwargs: t.Any) -> sa.Engine:
        seen.update(kwargs)
        return real(url, **kwargs)

    monkeypatch.setattr(sa, "create_engine", spy)
    engine = build_migration_engine(
        MigrateSettings(database_uri=f"{scheme}://u:p@h/db")
    )
    assert engine.driver == scheme.partition("+")[2]
    engine.dispose()
    args = seen["connect_args"]
    assert {k: args[k] for k in expected} == expected
    assert ("prepare_threshold" in args) == bool(expected)
