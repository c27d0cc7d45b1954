"""The services the integration tests run against, started and driven from Python.

- :mod:`.postgres`: a private PostgreSQL cluster (:class:`Postgres`);
- :mod:`.pgbouncer`: a TLS PgBouncer in front of it (:class:`PgBouncer`);
- :mod:`.proxy`: the fault-injecting proxy (:class:`FaultProxy`), with the bits of the
  wire protocol it reads in :mod:`.wire`;
- :mod:`.database`: one per-test database (:class:`TestDatabase`);
- :mod:`.common`: what they share (the account, ports, waiting, URLs).

The fixtures that start them live in ``tests/integration/conftest.py``. Import the
names from this package (``from .services import FaultProxy``).
"""

from __future__ import annotations

from .common import PG_PASSWORD
from .common import PG_USER
from .common import ServiceError
from .common import connect_psycopg2
from .common import find_openssl
from .common import find_pg_bindir
from .common import find_pgbouncer
from .common import free_port
from .common import reap
from .common import wait_until
from .database import TestDatabase
from .pgbouncer import PgBouncer
from .postgres import Postgres
from .proxy import FaultProxy

__all__ = [
    "PG_PASSWORD",
    "PG_USER",
    "FaultProxy",
    "PgBouncer",
    "Postgres",
    "ServiceError",
    "TestDatabase",
    "connect_psycopg2",
    "find_openssl",
    "find_pg_bindir",
    "find_pgbouncer",
    "free_port",
    "reap",
    "wait_until",
]
