"""The DBAPI driver under the migration engine: psycopg2 or psycopg 3, one interface.

Everything the migration code does below SQLAlchemy goes through here, so that the
two drivers behave the same on the wire (the same messages, the same round trips):

- **autocommit**: the code sends ``BEGIN``/``COMMIT`` itself, to decide what goes
  in each network message; :func:`set_autocommit` flips the driver's flag (no I/O).
- **the server's transaction status**, read from the last message (no I/O):
  :func:`in_server_transaction`.
- **several statements in one message, the last one's result**:
  :func:`execute_script`. Both drivers send a parameterless ``execute`` as one
  simple-protocol Query message, so ``BEGIN; SELECT ...`` costs one round trip
  either way; psycopg2 then shows the last statement's result, psycopg 3 the
  first. For psycopg 3 the cursor is moved on to the last result
  (``cursor.nextset()``) before SQLAlchemy builds its result, so callers see what
  psycopg2 shows. (A pipeline would cost the same round trip but sends each
  statement through the extended protocol, one prepared Parse each.)
- **no server-side prepared statements**: psycopg 3 prepares a query on the
  server after it ran 5 times on a connection. A prepared statement lives in the
  server session, and behind PgBouncer in transaction mode the next transaction
  may run on another server session, where it does not exist (or a different one
  by that name does). The migration engine is built with
  ``prepare_threshold=None``, and :func:`set_autocommit` turns it off on
  connections of other engines as well.
- **did a lost COMMIT land?** :func:`xact_status` asks ``pg_xact_status``.

How each driver's errors for the same dropped connection read is the business of
:mod:`~flask_safe_migrate.core.disconnects`, whose one table holds both drivers'
messages.
"""

from __future__ import annotations

import importlib.util
import re
import threading
import typing as t

import sqlalchemy as sa

from .exceptions import ConfigurationError

__all__ = [
    "DRIVERS",
    "Driver",
    "Psycopg2Driver",
    "Psycopg3Driver",
    "dbapi_connection",
    "driver_for",
    "execute_script",
    "in_server_transaction",
    "installed_driver_names",
    "set_autocommit",
    "ssl_in_use",
    "xact_status",
]

#: libpq's ``PQTRANS_IDLE``: both drivers report libpq's transaction status codes.
_TRANSACTION_IDLE = 0

#: Execution option asking for the last result of a several-statement message.
_LAST_RESULT = "safe_migrate_last_result"

#: Execution options of a message sent exactly as written (``%`` is no placeholder)
#: whose result is that of its last statement.
_SCRIPT_OPTIONS: t.Final[t.Mapping[str, t.Any]] = {
    "no_parameters": True,
    _LAST_RESULT: True,
}


class Driver:
    """What the migration code needs of a DBAPI driver; psycopg2's behaviour.

    :cvar name: the driver's name in a SQLAlchemy URL (``postgresql+NAME://``).
    :cvar module: the module to import, to tell whether it is installed.
    :cvar extra: how to install it.
    """

    name: t.ClassVar[str] = "psycopg2"
    module: t.ClassVar[str] = "psycopg2"
    extra: t.ClassVar[str] = "pip install psycopg2-binary"

    def connect_args(self) -> dict[str, t.Any]:
        """Return the driver's ``connect()`` arguments for the migration engine."""
        return {}

    def disable_prepare(self, raw: t.Any) -> None:
        """Stop ``raw`` from preparing statements on the server (no I/O)."""

    def to_last_result(self, cursor: t.Any) -> None:
        """Move ``cursor`` to the result of the last statement it ran."""

    def is_closed(self, raw: t.Any) -> bool:
        """Return whether the DBAPI connection ``raw`` is closed or broken."""
        return bool(raw.closed)

    def ssl_in_use(self, raw: t.Any) -> bool:
        """Return whether ``raw`` talks TLS to the server."""
        return bool(raw.info.ssl_in_use)


class Psycopg2Driver(Driver):
    """psycopg2: already shows the last result, never prepares on its own."""


class Psycopg3Driver(Driver):
    """psycopg 3: shows the first result, prepares after 5 executions."""

    name = "psycopg"
    module = "psycopg"
    extra = "pip install 'flask-safe-migrate[psycopg]'"

    def connect_args(self) -> dict[str, t.Any]:
        """Return ``prepare_threshold=None``: no server-side prepared statements.

        A statement prepared on the server outlives the transaction that prepared
        it; behind a transaction-mode pooler the next transaction may run on a
        server session that does not have it.
        """
        return {"prepare_threshold": None}

    def disable_prepare(self, raw: t.Any) -> None:
        """Set ``prepare_threshold = None`` on ``raw``."""
        raw.prepare_threshold = None

    def to_last_result(self, cursor: t.Any) -> None:
        """Step through ``nextset()`` to the last result (all are already read)."""
        while cursor.nextset():
            pass

    def is_closed(self, raw: t.Any) -> bool:
        """Return ``raw.closed or raw.broken``."""
        return bool(raw.closed or raw.broken)

    def ssl_in_use(self, raw: t.Any) -> bool:
        """Return whether ``raw`` talks TLS (psycopg 3 keeps it on ``pgconn``)."""
        return bool(raw.pgconn.ssl_in_use)


#: The supported drivers by SQLAlchemy driver name, in order of preference for a
#: URL that names none (psycopg2 first: it was the only driver before 0.2).
DRIVERS: t.Final[t.Mapping[str, Driver]] = {
    "psycopg2": Psycopg2Driver(),
    "psycopg": Psycopg3Driver(),
}


def installed_driver_names() -> list[str]:
    """Return the supported drivers that can be imported, preferred first."""
    return [
        name
        for name, driver in DRIVERS.items()
        if importlib.util.find_spec(driver.module) is not None
    ]


def driver_for(bind: sa.Engine | sa.Connection) -> Driver:
    """Return the :class:`Driver` of an engine or connection.

    :raises ConfigurationError: the engine uses another driver (asyncpg, pg8000...).
    """
    name = bind.dialect.driver
    try:
        return DRIVERS[name]
    except KeyError:
        raise ConfigurationError(
            f"driver {name!r} is not supported: use postgresql+psycopg2:// or "
            "postgresql+psycopg://",
            key="SAFE_MIGRATE_DATABASE_URI",
        ) from None


def dbapi_connection(conn: sa.Connection) -> t.Any:
    """Return the DBAPI connection under ``conn`` (``None`` once it is gone)."""
    return conn.connection.dbapi_connection


def set_autocommit(conn: sa.Connection, on: bool) -> None:
    """Turn the driver's autocommit flag of ``conn`` on or off (no I/O).

    This is the driver's flag, not SQLAlchemy's isolation-level option, whose reset
    on return sends a session-level ``SET`` that has no place behind a
    transaction-mode pooler. Turning it on also turns off psycopg 3's automatic
    server-side prepares on the connection, whatever engine it came from. A closed
    or broken connection is left alone: the pool will not hand it out again.
    """
    driver = driver_for(conn)
    raw = dbapi_connection(conn)
    if raw is None or driver.is_closed(raw):
        return
    if on:
        driver.disable_prepare(raw)
    raw.autocommit = on


def ssl_in_use(conn: sa.Connection) -> bool:
    """Return whether ``conn`` talks TLS to the server (or pooler) (no I/O)."""
    return driver_for(conn).ssl_in_use(dbapi_connection(conn))


def in_server_transaction(conn: sa.Connection) -> bool:
    """Return whether the server has a transaction open on ``conn`` (no I/O).

    ``False`` for a closed, invalidated or broken connection: there is nothing to
    roll back on it.
    """
    if conn.invalidated or conn.closed:
        return False
    raw = dbapi_connection(conn)
    if raw is None or driver_for(conn).is_closed(raw):
        return False
    return int(raw.info.transaction_status) != _TRANSACTION_IDLE


_hook_lock = threading.Lock()


def _to_last_result(
    conn: sa.Connection,
    cursor: t.Any,
    statement: str,
    parameters: t.Any,
    context: sa.engine.ExecutionContext | None,
    executemany: bool,
) -> None:
    if context is not None and context.execution_options.get(_LAST_RESULT):
        driver_for(conn).to_last_result(cursor)


def _install_last_result_hook(engine: sa.Engine) -> None:
    """Listen for executions of ``engine`` that ask for the last result, once."""
    if not isinstance(driver_for(engine), Psycopg3Driver):
        return
    with _hook_lock:
        if not sa.event.contains(engine, "after_cursor_execute", _to_last_result):
            sa.event.listen(engine, "after_cursor_execute", _to_last_result)


def execute_script(
    conn: sa.Connection, sql: str
) -> sa.CursorResult[*tuple[t.Any, ...]]:
    """Send ``sql``, one or several statements, as one message; return the last result.

    The text goes as written (no placeholders), in one simple-protocol Query: one
    round trip whatever the driver. Several statements run as one implicit
    transaction unless the text has its own ``BEGIN``. An error anywhere raises, as
    SQLAlchemy wraps it, and the statements after it do not run.
    """
    _install_last_result_hook(conn.engine)
    return conn.exec_driver_sql(sql, execution_options=_SCRIPT_OPTIONS)


_XID = re.compile(r"[0-9]{1,20}")


def xact_status(conn: sa.Connection, xid: str) -> str | None:
    """Return ``pg_xact_status(xid)``: ``committed``, ``aborted`` or ``in progress``.

    One round trip, with the id written into the text, so it goes as a simple
    Query on either driver (nothing prepared). ``None`` when the server no longer
    knows the transaction (it is older than the commit log it keeps).

    :param xid: a full transaction id, as ``pg_current_xact_id()::text`` gave it.
    :raises ValueError: ``xid`` is not a transaction id.
    """
    if not _XID.fullmatch(xid):
        raise ValueError(f"not a transaction id: {xid!r}")
    status = execute_script(conn, f"SELECT pg_xact_status('{xid}'::xid8)").scalar()
    return None if status is None else str(status)
