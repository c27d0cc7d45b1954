"""The PostgreSQL versions this library runs on, and the check that refuses the rest.

PostgreSQL 13 is the floor: an ambiguous COMMIT is resolved with
``pg_current_xact_id()`` and ``pg_xact_status()`` (both new in 13). The check reads
the version the server announced when the connection was opened (SQLAlchemy's
``dialect.server_version_info``), so it costs no round trip.
"""

from __future__ import annotations

import sqlalchemy as sa

from .exceptions import UnsupportedServerError

__all__ = [
    "MIN_SERVER_VERSION",
    "require_supported_server",
    "server_version",
    "server_version_problem",
]

#: The oldest PostgreSQL major supported.
MIN_SERVER_VERSION = 13


def server_version(dialect: sa.Dialect) -> tuple[int, ...] | None:
    """Return the version the server announced, e.g. ``(15, 18)``; None before any
    connection of the dialect's engine was opened."""
    info = dialect.server_version_info
    return None if info is None else tuple(p for p in info if isinstance(p, int))


def server_version_problem(version: tuple[int, ...] | None) -> str | None:
    """Say what is wrong with a server of ``version``, or None when it is supported.

    :param version: ``dialect.server_version_info``, e.g. ``(15, 18)``; None when
        no connection was opened yet.
    """
    if version is None:
        return "the server version is unknown: no connection was opened yet"
    if version[0] >= MIN_SERVER_VERSION:
        return None
    shown = ".".join(str(part) for part in version)
    return (
        f"PostgreSQL {shown} is not supported: flask-safe-migrate needs PostgreSQL "
        f"{MIN_SERVER_VERSION} or newer (pg_current_xact_id, pg_xact_status)"
    )


def require_supported_server(dialect: sa.Dialect) -> tuple[int, ...]:
    """Refuse a server older than :data:`MIN_SERVER_VERSION`; return its version.

    Call it once a connection of the engine has been opened (the dialect learns the
    version then).

    :raises UnsupportedServerError: the server is too old, or no connection was
        opened yet.
    """
    version = server_version(dialect)
    problem = server_version_problem(version)
    if version is None or problem is not None:
        raise UnsupportedServerError(str(problem), server_version=version or ())
    return version
