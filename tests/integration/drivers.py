"""The DBAPI drivers that every driver-touching integration test runs on.

A test that asks for ``url_driver`` runs once per driver, with the same assertions
(round trips counted at the proxy included): psycopg2 and psycopg 3.
"""

from __future__ import annotations

import typing as t

import psycopg
import pytest
import sqlalchemy as sa

from .services.common import libpq_kwargs

if t.TYPE_CHECKING:
    from .services import FaultProxy
    from .services import TestDatabase

__all__ = [
    "URL_DRIVERS",
    "connect_psycopg",
    "proxy_url_on_driver",
    "url_driver",
    "with_driver",
]

#: SQLAlchemy driver names by test id.
URL_DRIVERS = {"psycopg2": "postgresql+psycopg2", "psycopg3": "postgresql+psycopg"}


@pytest.fixture(params=list(URL_DRIVERS.values()), ids=list(URL_DRIVERS))
def url_driver(request: pytest.FixtureRequest) -> str:
    """Give a URL driver name (``postgresql+psycopg2``, ``postgresql+psycopg``)."""
    name: str = request.param
    return name


@pytest.fixture
def proxy_url_on_driver(
    proxy: FaultProxy, database: TestDatabase, url_driver: str
) -> str:
    """Give the URL of ``database`` through ``proxy``, once per driver."""
    return proxy.url(database.name, driver=url_driver)


def with_driver(url: str, url_driver: str) -> str:
    """Return ``url`` with its driver replaced by ``url_driver``."""
    parsed = sa.make_url(url).set(drivername=url_driver)
    return parsed.render_as_string(hide_password=False)


def connect_psycopg(url: str | sa.URL) -> psycopg.Connection[t.Any]:
    """Open a raw psycopg 3 connection from a SQLAlchemy URL (query args are kwargs)."""
    return psycopg.connect(**libpq_kwargs(url))
