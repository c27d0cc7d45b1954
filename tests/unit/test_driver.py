"""core.driver without a database: which driver, what each sets, bad input."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.driver import DRIVERS
from flask_safe_migrate.core.driver import driver_for
from flask_safe_migrate.core.driver import installed_driver_names
from flask_safe_migrate.core.driver import xact_status
from flask_safe_migrate.core.exceptions import ConfigurationError


@pytest.mark.parametrize("name", ["psycopg2", "psycopg"])
def test_driver_for_an_engine(name: str) -> None:
    """The driver is chosen by the engine's dialect, without connecting."""
    engine = sa.create_engine(f"postgresql+{name}://u:p@h/db")
    assert driver_for(engine) is DRIVERS[name]
    assert driver_for(engine).name == name


def test_unsupported_driver_is_a_configuration_error() -> None:
    """An engine on another driver gets one line naming the supported ones."""
    engine = sa.create_engine("sqlite://")
    with pytest.raises(ConfigurationError, match="postgresql\\+psycopg://"):
        driver_for(engine)


def test_both_drivers_are_installed_psycopg2_first() -> None:
    """In the dev environment both are installed, psycopg2 preferred."""
    assert installed_driver_names() == ["psycopg2", "psycopg"]


def test_only_psycopg3_disables_server_side_prepares() -> None:
    """prepare_threshold=None for psycopg 3; psycopg2 never prepares by itself."""
    assert DRIVERS["psycopg"].connect_args() == {"prepare_threshold": None}
    assert DRIVERS["psycopg2"].connect_args() == {}


@pytest.mark.parametrize("xid", ["", "12a", "1; DROP TABLE x", "1' OR '1"])
def test_xact_status_refuses_what_is_not_a_transaction_id(xid: str) -> None:
    """The id is written into the SQL text, so only digits pass (no I/O happens)."""
    with pytest.raises(ValueError, match="not a transaction id"):
        xact_status(None, xid)  # type: ignore[arg-type]  # refused before any use
