"""The DBAPI drivers that every driver-touching integration test runs on.

A test that asks for ``url_driver`` runs once per driver (ids ``psycopg2`` and
``psycopg3``), with the same assertions (round trips counted at the proxy
included). The ``database``, ``proxy`` and ``own_stack`` fixtures ask for it and
name it in every URL they give (``database.bouncer_url``, ``proxy.url()``...), so
every test that uses them, and every engine, app, CLI or subprocess it starts from
those URLs, runs on both drivers without saying so.

A module that measures one driver's own behaviour pins it with
``url_driver = pinned_driver("psycopg2")`` and says why.
"""

from __future__ import annotations

import typing as t

import psycopg
import pytest
import sqlalchemy as sa

from .services.common import libpq_kwargs

__all__ = [
    "URL_DRIVERS",
    "connect_psycopg",
    "pinned_driver",
    "url_driver_fixture",
    "with_driver",
]

#: SQLAlchemy driver names by test id.
URL_DRIVERS = {"psycopg2": "postgresql+psycopg2", "psycopg3": "postgresql+psycopg"}


@pytest.fixture(
    name="url_driver", params=list(URL_DRIVERS.values()), ids=list(URL_DRIVERS)
)
def url_driver_fixture(request: pytest.FixtureRequest) -> str:
    """Give a URL driver name (``postgresql+psycopg2``, ``postgresql+psycopg``)."""
    name: str = request.param
    return name


def pinned_driver(test_id: str) -> t.Callable[[], str]:
    """Return a ``url_driver`` fixture that gives one driver only (by test id).

    Assigned to ``url_driver`` in a test module, it overrides the parametrized
    fixture there: the module's tests run once, on that driver.
    """

    @pytest.fixture(name="url_driver")
    def pinned() -> str:
        return URL_DRIVERS[test_id]

    return pinned


def with_driver(url: str, url_driver: str) -> str:
    """Return ``url`` with its driver replaced by ``url_driver``."""
    parsed = sa.make_url(url).set(drivername=url_driver)
    return parsed.render_as_string(hide_password=False)


def connect_psycopg(url: str | sa.URL) -> psycopg.Connection[t.Any]:
    """Open a raw psycopg 3 connection from a SQLAlchemy URL (query args are kwargs)."""
    return psycopg.connect(**libpq_kwargs(url))
