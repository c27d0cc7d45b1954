"""Settings precedence and conversion in the Flask layer."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from flask_safe_migrate import ConfigurationError
from flask_safe_migrate import MigrateSettings
from flask_safe_migrate import SafeMigrate
from flask_safe_migrate.extension import get_state


def test_defaults_come_from_migrate_settings(app: Flask) -> None:
    """Without config, every setting but the URL is the dataclass default."""
    SafeMigrate(app)
    settings = get_state(app).settings
    assert settings.lock_timeout_seconds == MigrateSettings().lock_timeout_seconds
    assert settings.retry_max_attempts == 10


def test_app_config_beats_environment_beats_overrides(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """app.config wins over the environment, which wins over constructor overrides."""
    monkeypatch.setenv("SAFE_MIGRATE_RETRY_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("SAFE_MIGRATE_LOCK_TIMEOUT_SECONDS", "3.5")
    app.config["SAFE_MIGRATE_RETRY_MAX_ATTEMPTS"] = 7
    SafeMigrate(app, retry_max_attempts=2, lock_timeout_seconds=1.0, ledger_table="x")
    settings = get_state(app).settings
    assert settings.retry_max_attempts == 7
    assert settings.lock_timeout_seconds == 3.5
    assert settings.ledger_table == "x"


def test_environment_strings_are_converted(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Environment strings become bools, floats, tuples and None."""
    monkeypatch.setenv("SAFE_MIGRATE_LINT_ON_RUN", "false")
    monkeypatch.setenv("SAFE_MIGRATE_STATEMENT_TIMEOUT_SECONDS", "30")
    monkeypatch.setenv("SAFE_MIGRATE_LINT_DISABLED_RULES", "a-rule, b-rule")
    SafeMigrate(app)
    settings = get_state(app).settings
    assert settings.lint_on_run is False
    assert settings.statement_timeout_seconds == 30.0
    assert settings.lint_disabled_rules == ("a-rule", "b-rule")


def test_bad_value_error_names_the_key(app: Flask) -> None:
    """A bad value raises ConfigurationError naming its key."""
    app.config["SAFE_MIGRATE_ON_BOOT"] = "sometimes"
    with pytest.raises(ConfigurationError, match="SAFE_MIGRATE_ON_BOOT") as info:
        SafeMigrate(app)
    assert info.value.key == "SAFE_MIGRATE_ON_BOOT"


def test_bad_environment_value_names_the_key(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad environment value is reported with its key too."""
    monkeypatch.setenv("SAFE_MIGRATE_RETRY_MAX_ATTEMPTS", "many")
    with pytest.raises(ConfigurationError, match="SAFE_MIGRATE_RETRY_MAX_ATTEMPTS"):
        SafeMigrate(app)


def test_unknown_config_key_is_an_error(app: Flask) -> None:
    """A typo in an app.config key is refused with a suggestion."""
    app.config["SAFE_MIGRATE_ON_BOT"] = "off"
    with pytest.raises(ConfigurationError, match="did you mean SAFE_MIGRATE_ON_BOOT"):
        SafeMigrate(app)


def test_unknown_environment_key_is_ignored(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown SAFE_MIGRATE_* environment variables (test switches) are ignored."""
    monkeypatch.setenv("SAFE_MIGRATE_TESTS_REQUIRE_POSTGRES", "1")
    SafeMigrate(app)
    assert "safe_migrate" in app.extensions


def test_unknown_override_is_a_type_error() -> None:
    """A constructor override that is not a setting is a TypeError."""
    with pytest.raises(TypeError, match="on_boto"):
        SafeMigrate(on_boto="off")


def test_effective_values_are_visible_in_config(app: Flask) -> None:
    """After init_app, every key is in app.config with its effective value."""
    SafeMigrate(app, ledger_table="my_ledger")
    for key in MigrateSettings.keys():  # noqa: SIM118  # a classmethod, not a dict
        assert key in app.config
    assert app.config["SAFE_MIGRATE_LEDGER_TABLE"] == "my_ledger"
    assert app.config["SAFE_MIGRATE_ON_BOOT"] == "off"


def test_database_uri_falls_back_to_sqlalchemy_uri(app: Flask) -> None:
    """Without SAFE_MIGRATE_DATABASE_URI the Flask-SQLAlchemy URL is used."""
    SafeMigrate(app)
    assert get_state(app).settings.database_uri == app.config["SQLALCHEMY_DATABASE_URI"]


def test_database_uri_wins_over_sqlalchemy_uri(app: Flask) -> None:
    """SAFE_MIGRATE_DATABASE_URI (the pooler URL) wins when set."""
    app.config["SAFE_MIGRATE_DATABASE_URI"] = "postgresql://u:p@pooler:6543/db"
    SafeMigrate(app)
    assert get_state(app).settings.database_uri == "postgresql://u:p@pooler:6543/db"


def test_settings_are_read_once(app: Flask) -> None:
    """Changing app.config after init_app does not change the settings."""
    SafeMigrate(app)
    app.config["SAFE_MIGRATE_RETRY_MAX_ATTEMPTS"] = 99
    assert get_state(app).settings.retry_max_attempts == 10


def test_readme_documents_every_key() -> None:
    """The README's configuration table has a row for every setting."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [k for k in MigrateSettings.keys() if f"| `{k}` |" not in readme]  # noqa: SIM118  # a classmethod
    assert missing == []


def test_generate_settings_are_read(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SAFE_MIGRATE_METADATA is a string, SAFE_MIGRATE_GENERATE_EXCLUDE a list."""
    monkeypatch.setenv("SAFE_MIGRATE_GENERATE_EXCLUDE", "legacy_*, audit.log")
    app.config["SAFE_MIGRATE_METADATA"] = "myapp.models:metadata"
    SafeMigrate(app)
    settings = get_state(app).settings
    assert settings.metadata == "myapp.models:metadata"
    assert settings.generate_exclude == ("legacy_*", "audit.log")
    assert MigrateSettings().metadata is None
    assert MigrateSettings().generate_exclude == ()


def test_step_modules_package_imports_its_modules_in_file_name_order(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package in SAFE_MIGRATE_STEP_MODULES has its modules imported by file name."""
    package = tmp_path / "genpkg_order"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ext.py").write_text(
        "from flask_safe_migrate import SafeMigrate\nmigrate = SafeMigrate()\n"
    )
    for name in ("0010_b", "0002_a", "_private"):
        (package / f"{name}.py").write_text(
            f"from .ext import migrate\nmigrate.sql('{name}', 'SELECT 1')\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    from genpkg_order.ext import migrate  # type: ignore[import-not-found]  # made above

    app.config["SAFE_MIGRATE_STEP_MODULES"] = ["genpkg_order"]
    app.config["SAFE_MIGRATE_ON_BOOT"] = "off"
    migrate.init_app(app)
    assert [s.id for s in migrate.registry.steps()] == ["0002_a", "0010_b"]


def test_alembic_directory_comes_from_the_environment(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SAFE_MIGRATE_ALEMBIC_DIRECTORY`` is a path string; empty means unset."""
    assert MigrateSettings().alembic_directory is None
    migrations = Path(__file__).parents[1] / "flask_migrate_app" / "migrations"
    monkeypatch.setenv("SAFE_MIGRATE_ALEMBIC_DIRECTORY", str(migrations))
    migrate = SafeMigrate(app)
    assert get_state(app).settings.alembic_directory == str(migrations)
    assert len(migrate.registry) == 9
    assert (
        MigrateSettings.from_mapping(
            {"SAFE_MIGRATE_ALEMBIC_DIRECTORY": ""}
        ).alembic_directory
        is None
    )
