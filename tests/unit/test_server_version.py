"""The server version check: PostgreSQL 13 or newer, read without a round trip."""

from __future__ import annotations

import types

import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.exceptions import UnsupportedServerError
from flask_safe_migrate.core.server_version import MIN_SERVER_VERSION
from flask_safe_migrate.core.server_version import require_supported_server
from flask_safe_migrate.core.server_version import server_version_problem


def dialect(version: tuple[int, ...] | None) -> sa.Dialect:
    """A dialect that has seen a server of ``version`` (None: not connected yet)."""
    fake: sa.Dialect = types.SimpleNamespace(server_version_info=version)  # type: ignore[assignment]  # duck-typed dialect
    return fake


@pytest.mark.parametrize("version", [(13, 0), (13, 4), (15, 18), (17, 11), (18, 1)])
def test_13_and_newer_pass(version: tuple[int, ...]) -> None:
    """Every major from 13 on is accepted and its version returned."""
    assert server_version_problem(version) is None
    assert require_supported_server(dialect(version)) == version


@pytest.mark.parametrize("version", [(12, 19), (11, 13), (9, 6, 24)])
def test_12_and_older_are_refused_in_one_line(version: tuple[int, ...]) -> None:
    """An older server is refused, naming its version, the floor and why."""
    with pytest.raises(UnsupportedServerError) as info:
        require_supported_server(dialect(version))
    message = str(info.value)
    assert message.startswith(f"PostgreSQL {'.'.join(map(str, version))} is not")
    assert f"PostgreSQL {MIN_SERVER_VERSION} or newer" in message
    assert "pg_current_xact_id" in message
    assert "\n" not in message
    assert info.value.server_version == version


def test_unknown_version_is_refused() -> None:
    """Before any connection the version is unknown, which is not a pass."""
    with pytest.raises(UnsupportedServerError, match="unknown"):
        require_supported_server(dialect(None))
