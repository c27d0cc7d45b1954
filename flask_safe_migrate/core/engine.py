"""build_migration_engine: a dedicated, pooler-safe engine for migrations only."""

from __future__ import annotations

import logging
import time
import typing as t

import sqlalchemy as sa

from .driver import DRIVERS
from .driver import installed_driver_names
from .exceptions import ConfigurationError
from .settings import MigrateSettings

__all__ = ["build_migration_engine", "parse_database_url", "safe_url"]

logger = logging.getLogger(__name__)

_KEY = "SAFE_MIGRATE_DATABASE_URI"

#: Bare ``postgresql://`` (what Supabase, Neon and Heroku hand out) means psycopg 3
#: to SQLAlchemy 2.1; we pick the installed driver, psycopg2 first.
_BARE_NAMES = {"postgresql", "postgres"}


def safe_url(url: str | sa.URL | None) -> str:
    """Render ``url`` for a message: password hidden, never raising."""
    if url is None:
        return "<no URL>"
    if isinstance(url, sa.URL):
        return url.render_as_string(hide_password=True)
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        scheme = url.split("://", 1)[0] if "://" in url else "?"
        return f"{scheme}://***"


def _driver_name(driver: str, url: sa.URL, key: str) -> str:
    """Return the driver for the URL's ``+driver`` part ('' when it names none).

    :raises ConfigurationError: an unsupported driver, or one that is not installed.
    """
    installed = installed_driver_names()
    if driver == "":
        if not installed:
            raise ConfigurationError(
                "no PostgreSQL driver installed: pip install psycopg2-binary "
                "(or psycopg[binary])",
                key=key,
            )
        return installed[0]
    if driver not in DRIVERS:
        raise ConfigurationError(
            f"driver {driver!r} in {safe_url(url)} is not supported: use "
            "postgresql://, postgresql+psycopg2:// or postgresql+psycopg://",
            key=key,
        )
    if driver not in installed:
        raise ConfigurationError(
            f"{safe_url(url)} asks for the {driver} driver, which is not installed: "
            f"{DRIVERS[driver].extra}",
            key=key,
        )
    return driver


def parse_database_url(url: str | sa.URL | None, *, key: str = _KEY) -> sa.URL:
    """Parse and check a migration URL and name its driver.

    ``postgresql+psycopg2://`` and ``postgresql+psycopg://`` (psycopg 3) are kept;
    a bare ``postgresql://`` or ``postgres://`` gets the installed driver, psycopg2
    first (for compatibility; SQLAlchemy 2.1 alone would pick psycopg 3).

    :raises ConfigurationError: missing, malformed or non-PostgreSQL URL, naming
        ``key`` and showing the URL with its password hidden.
    """
    if url is None or (isinstance(url, str) and not url.strip()):
        raise ConfigurationError(
            "no database URL: set SAFE_MIGRATE_DATABASE_URI (or "
            "SQLALCHEMY_DATABASE_URI) to a postgresql:// URL",
            key=key,
        )
    try:
        parsed = url if isinstance(url, sa.URL) else sa.make_url(url.strip())
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigurationError(
            f"malformed database URL {safe_url(url)}: expected "
            "postgresql://user:password@host:port/dbname",
            key=key,
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in _BARE_NAMES:
        raise ConfigurationError(
            f"{safe_url(parsed)} is not a PostgreSQL URL; flask-safe-migrate "
            "supports PostgreSQL 13+ only",
            key=key,
        )
    parsed = parsed.set(drivername=f"postgresql+{_driver_name(driver, parsed, key)}")
    if not parsed.host and "host" not in parsed.query:
        raise ConfigurationError(
            f"{safe_url(parsed)} names no host; expected "
            "postgresql://user:password@host:port/dbname",
            key=key,
        )
    return parsed


#: A pooled connection idle longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0
_CHECKED_IN_AT = "safe_migrate_checked_in_at"


def _record_checkin(dbapi_connection: t.Any, record: t.Any) -> None:
    record.info[_CHECKED_IN_AT] = time.monotonic()


def _ping_after_idle(dbapi_connection: t.Any, record: t.Any, proxy: t.Any) -> None:
    """Ping a pooled connection that sat idle; a dead one is replaced by the pool.

    A connection checked in less than :data:`PING_AFTER_IDLE_SECONDS` ago was just
    used successfully; if it died since, the retry loop handles it like any drop.
    The ping runs in autocommit mode, so it is one ``SELECT 1`` and no ``BEGIN``.
    """
    checked_in = record.info.get(_CHECKED_IN_AT)
    if checked_in is None or time.monotonic() - checked_in < PING_AFTER_IDLE_SECONDS:
        return
    try:
        # Both drivers' autocommit flags are client-side; no BEGIN is sent.
        previous = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        finally:
            dbapi_connection.autocommit = previous
    except Exception as exc:
        raise sa.exc.DisconnectionError(str(exc)) from exc


def build_migration_engine(
    settings: MigrateSettings, *, url: str | sa.URL | None = None
) -> sa.Engine:
    """Create the migration engine: never the app's engine, never ``db.session``.

    TCP keepalives, ``connect_timeout`` and ``application_name`` are set on every
    connection (values in the URL's query win); the pool is tiny with pre-ping, and
    nothing is session-scoped, so it is safe through PgBouncer in transaction mode.

    :param url: overrides ``settings.database_uri``.
    :raises ConfigurationError: the URL is missing, malformed or not PostgreSQL.
    """
    parsed = parse_database_url(url if url is not None else settings.database_uri)
    options = _engine_options(settings, parsed)
    engine = sa.create_engine(parsed, **options)
    if not options["pool_pre_ping"]:
        sa.event.listen(engine, "checkin", _record_checkin)
        sa.event.listen(engine, "checkout", _ping_after_idle)
    logger.debug("migration engine for %s (%s)", safe_url(parsed), engine.driver)
    return engine


def _engine_options(settings: MigrateSettings, parsed: sa.URL) -> dict[str, t.Any]:
    """Return ``create_engine`` keywords: the defaults, then the user's options."""
    connect_args: dict[str, t.Any] = {
        "connect_timeout": max(1, round(settings.connect_timeout_seconds)),
        "application_name": settings.application_name,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }
    for name in list(connect_args):
        if name in parsed.query:
            del connect_args[name]  # the URL's own value wins
    # psycopg 3: prepare_threshold=None, no server-side prepared statements (they
    # outlive the transaction, which a transaction-mode pooler does not guarantee).
    connect_args.update(DRIVERS[parsed.get_driver_name()].connect_args())
    options: dict[str, t.Any] = {
        "pool_size": 1,
        "max_overflow": 2,
        # Pre-ping is done by _ping_after_idle below: only a connection that sat idle
        # in the pool is pinged, so consecutive steps do not pay a round trip each.
        "pool_pre_ping": False,
        "pool_recycle": 300,
        "pool_timeout": 30,
    }
    user_options = dict(settings.engine_options)
    connect_args.update(user_options.pop("connect_args", {}))
    options.update(user_options)
    options["connect_args"] = connect_args
    return options
