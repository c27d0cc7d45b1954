"""Per-app migrator state: what ``init_app`` learned, for the boot run and the CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import typing as t

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm
from flask import Flask
from flask import current_app
from flask import has_app_context

from .core.engine import build_migration_engine
from .core.exceptions import ConfigurationError
from .core.exceptions import LockNotAcquiredError
from .core.exceptions import SafeMigrateError
from .core.settings import PREFIX
from .core.settings import MigrateSettings
from .core.steps import StepRegistrar
from .core.steps import StepRegistry

__all__ = [
    "EXTENSION_KEY",
    "MigrateState",
    "blame_app_session",
    "get_state",
    "migration_engine",
    "registrar_path",
]

#: Where ``init_app`` keeps the :class:`MigrateState` of an app.
EXTENSION_KEY = "safe_migrate"


@dataclasses.dataclass
class MigrateState:
    """What one app's migrator knows: its settings (read once), steps and errors.

    Kept in ``app.extensions["safe_migrate"]``; :func:`get_state` returns it.

    :ivar settings: the effective settings, read once by ``init_app``.
    :ivar registry: the app's steps.
    :ivar db: the Flask-SQLAlchemy extension given to ``init_app`` (never used to
        migrate; only to name the app's own session when it blocks a step).
    :ivar errors: a configuration error and the registration errors (duplicate
        step id...) found while the app was loaded by a ``flask`` command; the
        ``safe-migrate`` commands raise the first one (:meth:`raise_error`).
    """

    settings: MigrateSettings
    registry: StepRegistry
    db: object | None = None
    errors: list[SafeMigrateError] = dataclasses.field(default_factory=list)

    def models(self) -> sa.MetaData | None:
        """The models ``generate`` compares: ``db.metadata``, or None without a db
        (``SAFE_MIGRATE_METADATA``, when set, wins over both). Only ``generate``
        reads it, never the boot run."""
        metadata = getattr(self.db, "metadata", None) if self.db is not None else None
        return metadata if isinstance(metadata, sa.MetaData) else None

    def raise_error(self) -> None:
        """Raise the first error found while loading the app, if any.

        :raises SafeMigrateError: a configuration or registration error.
        """
        if self.errors:
            raise self.errors[0]


def get_state(app: Flask | None = None) -> MigrateState:
    """Return the migrator state of ``app`` (the current app by default).

    Public so the CLI and your own commands can read the settings and steps.

    :raises RuntimeError: ``SafeMigrate.init_app`` was not called for the app.
    """
    app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]  # LocalProxy
    try:
        state = app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "SafeMigrate is not initialized on this app: call migrate.init_app(app)"
        ) from None
    assert isinstance(state, MigrateState)
    return state


@contextlib.contextmanager
def migration_engine(app: Flask | None = None) -> t.Iterator[sa.Engine]:
    """Build the migration engine of ``app`` and dispose it (all sockets) on exit.

    :raises ConfigurationError: the URL is missing, malformed or not PostgreSQL.
    """
    state = get_state(app)
    engine = build_migration_engine(state.settings)
    try:
        yield engine
    finally:
        engine.dispose()


def registrar_path(app: Flask | None = None) -> str:
    """``module:attribute`` of the object that registers the steps of ``app`` (the
    ``SafeMigrate`` object, or its registry), for the modules ``generate`` writes.

    Among the imported modules that hold it at top level, modules outside the
    step modules come first (a step module imports it from where it is made),
    then the name ``migrate``, then module name order.

    :raises ConfigurationError: no imported module holds it at top level.
    """
    state = get_state(app)
    skip = tuple(state.settings.step_modules)
    found = []
    for module_name, module in list(sys.modules.items()):
        if module is None or module_name == "__main__":
            continue
        stepish = any(module_name == s or module_name.startswith(s + ".") for s in skip)
        for attribute, value in list(vars(module).items()):
            # type(), not isinstance(): a LocalProxy (flask.request) would
            # resolve its target, outside any request.
            if not issubclass(type(value), StepRegistrar):
                continue
            if value is state.registry or getattr(value, "registry", None) is (
                state.registry
            ):
                found.append((stepish, attribute != "migrate", module_name, attribute))
    if not found:
        raise ConfigurationError(
            "the SafeMigrate object is not a module-level name of any module; "
            "create it at the top of a module (migrate = SafeMigrate())",
            key=PREFIX + "STEP_MODULES",
        )
    *_, module_name, attribute = min(found)
    return f"{module_name}:{attribute}"


#: The tables a backend holds locks on (granted), for naming the app's session.
_HELD_LOCKS_SQL = """
SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
WHERE l.pid = {pid} AND l.granted AND l.locktype = 'relation'
  AND c.relkind IN ('r', 'p', 'm') AND c.relnamespace <> 'pg_catalog'::regnamespace
ORDER BY c.relname
"""


def blame_app_session(
    state: MigrateState, engine: sa.Engine, exc: LockNotAcquiredError
) -> LockNotAcquiredError:
    """Name this process's own app session when it holds the locks a step waited for.

    A step that uses ``db.session`` (instead of its handle) leaves a transaction
    open in the app's session, holding locks; the step's own DDL then waits for
    them until it gives up. When the app's session (in the current app context)
    has a transaction open and holds table locks (``pg_locks``), the error says
    so; otherwise ``exc`` is returned as it is.
    """
    session = getattr(state.db, "session", None)
    if session is None or not has_app_context():
        return exc
    try:
        if isinstance(session, sa_orm.scoped_session):
            session = session()  # this app context's session
        if not session.in_transaction():
            return exc
        # Only after a failure, and only to read its own pid: the app's session
        # is never used to migrate.
        pid = int(session.execute(sa.text("SELECT pg_backend_pid()")).scalar())
        with engine.connect() as conn:
            held = conn.exec_driver_sql(_HELD_LOCKS_SQL.format(pid=pid)).fetchall()
    except Exception:  # best effort: the original error stays the answer
        return exc
    if not held:
        return exc
    locks = ", ".join(f"{mode} on {table}" for table, mode in held)
    return LockNotAcquiredError(
        f"{exc}; the lock is held by this process's own app session (db.session, "
        f"backend pid {pid}: {locks}): a step must not use db.session; send its "
        "SQL through the step handle (m.execute) and end the app's transaction "
        "before migrating",
        key=exc.key,
        waited_seconds=exc.waited_seconds,
        step_id=exc.step_id,
        blockers=[f"pid {pid} (this process's db.session): {locks}", *exc.blockers],
    )
