"""SafeMigrate: the Flask extension; reads the settings, runs the schema on boot.

The boot run happens when the app is served: a WSGI server calling the factory, a
plain ``create_app()``, or ``flask run``. Any other ``flask`` command (``routes``,
``shell``, ``db ...``, ``--help``, ``safe-migrate`` itself) loads the app without
touching the database: :func:`is_served` asks click which command is running.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import pkgutil
import typing as t

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import FlaskGroup
from flask.cli import ScriptInfo

from . import cli
from .core import commands
from .core import revisions
from .core.engine import build_migration_engine
from .core.exceptions import ConfigurationError
from .core.exceptions import RegistrationError
from .core.exceptions import SafeMigrateError
from .core.runner import RunReport
from .core.settings import PREFIX
from .core.settings import MigrateSettings
from .core.steps import Phase
from .core.steps import Step
from .core.steps import StepRegistrar
from .core.steps import StepRegistry
from .state import EXTENSION_KEY
from .state import MigrateState
from .state import get_state
from .state import migration_engine

__all__ = [
    "MigrateState",
    "SafeMigrate",
    "get_state",
    "is_served",
    "migration_engine",
]

logger = logging.getLogger(__name__)

_FIELDS = frozenset(f.name for f in dataclasses.fields(MigrateSettings))


class SafeMigrate(StepRegistrar):
    """Exactly-once, pooler-safe migrations for one or more Flask apps.

    Registration errors (a duplicate step id, an unknown category) found while a
    module registers its steps are recorded, not raised at import time:
    :meth:`init_app` raises the first one (or, under a ``flask`` command, the
    ``safe-migrate`` commands report it as one line, exit 2).

    :param app: an app to initialize now (or call :meth:`init_app` later).
    :param db: the Flask-SQLAlchemy extension; never used to migrate (the
        migration engine is separate).
    :param registry: the steps; a new :class:`StepRegistry` by default.
    :param overrides: per-instance defaults by field name (``on_boot="off"``);
        environment and ``app.config`` values win over them.
    :raises TypeError: an override is not a setting.
    """

    def __init__(
        self,
        app: Flask | None = None,
        db: object | None = None,
        *,
        registry: StepRegistry | None = None,
        **overrides: t.Any,
    ) -> None:
        unknown = sorted(set(overrides) - _FIELDS)
        if unknown:
            raise TypeError(
                f"SafeMigrate() got unknown setting(s) {', '.join(unknown)}; "
                f"expected field names of MigrateSettings, e.g. on_boot"
            )
        self.registry = registry if registry is not None else StepRegistry()
        self.overrides: dict[str, t.Any] = dict(overrides)
        #: Errors of :meth:`add`, raised by :meth:`init_app` (shared with the states).
        self.registration_errors: list[SafeMigrateError] = []
        if app is not None:
            self.init_app(app, db)

    def add(self, step: Step) -> Step:
        """Register a built step in :attr:`registry` (what ``sql``, ``step``,
        ``index`` and ``backfill`` call); an error is recorded for ``init_app``."""
        try:
            return self.registry.add(step)
        except RegistrationError as exc:
            self.registration_errors.append(exc)
            return step

    def alembic(
        self,
        directory: str | os.PathLike[str] = "migrations",
        *,
        categories: t.Mapping[str, str] | None = None,
    ) -> list[Step]:
        """Register an Alembic (Flask-Migrate) script directory's revisions as steps.

        Each revision becomes a schema step (id = revision id), in upgrade order,
        run exactly once through Alembic's own ``Operations`` inside the step's
        transaction. ``env.py`` is not run; ``alembic_version`` is not written.

        :param directory: as Flask-Migrate resolves it: relative to the current
            directory, or absolute.
        :param categories: revision id -> small-DML category, e.g.
            ``{"1b2c3d4e5f60": "seed"}``, for revisions that change data.
        :raises ConfigurationError: Alembic is not installed (the message has the
            pip command).
        :raises RegistrationError: unreadable revisions or several heads.
        """
        return revisions.register_revisions(self, directory, categories=categories)

    # -- the app -----------------------------------------------------------------

    def init_app(self, app: Flask, db: object | None = None) -> None:
        """Read the settings, import the step modules, register the CLI, run on boot.

        The settings are read once, here: ``app.config`` ``SAFE_MIGRATE_*`` over the
        environment over this instance's overrides over the defaults; the effective
        values are then visible in ``app.config``. The boot run happens only when
        the app is served (:func:`is_served`); under another ``flask`` command a
        configuration or registration error is kept for the ``safe-migrate``
        commands to report, so ``flask routes`` or ``flask --help`` still work.

        :raises RuntimeError: ``init_app`` was already called for this app.
        :raises ConfigurationError: a bad ``SAFE_MIGRATE_*`` value.
        :raises RegistrationError: a step could not be registered (duplicate id...).
        :raises SafeMigrateError: the boot run failed and ``SAFE_MIGRATE_BOOT_FAILURE``
            is ``raise``.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "SafeMigrate is already initialized on this app: call "
                "init_app(app) once per app (create a new app in each test)"
            )
        app.cli.add_command(cli.group)
        served = is_served()
        state = MigrateState(MigrateSettings(), self.registry, db)
        state.errors = self.registration_errors  # later registrations show too
        app.extensions[EXTENSION_KEY] = state
        try:
            explicit_url, state.settings = self._read_settings(app)
            self._register_alembic_directory(state.settings)
            _import_step_modules(state.settings.step_modules)
        except SafeMigrateError as exc:  # a bad setting, a step module's error
            if served:
                raise
            state.errors = [exc, *self.registration_errors]
            return
        if served:
            state.raise_error()
            if state.settings.on_boot != "off" and _can_boot(
                state.settings, explicit_url
            ):
                self._boot(state.settings)

    def _read_settings(self, app: Flask) -> tuple[bool, MigrateSettings]:
        """Return whether ``SAFE_MIGRATE_DATABASE_URI`` is set, and the settings."""
        known = set(MigrateSettings.keys())
        mapping: dict[str, t.Any] = {k: v for k, v in os.environ.items() if k in known}
        mapping.update((k, v) for k, v in app.config.items() if k.startswith(PREFIX))
        settings = MigrateSettings.from_mapping(mapping, defaults=self.overrides)
        for field in dataclasses.fields(settings):
            app.config.setdefault(
                PREFIX + field.name.upper(), getattr(settings, field.name)
            )
        if settings.database_uri is not None:
            return True, settings
        fallback = app.config.get("SQLALCHEMY_DATABASE_URI")
        if isinstance(fallback, str | sa.URL):
            settings = settings.replace(database_uri=str(_as_string(fallback)))
        return False, settings

    def _register_alembic_directory(self, settings: MigrateSettings) -> None:
        """Register ``SAFE_MIGRATE_ALEMBIC_DIRECTORY`` unless revisions already are."""
        directory = settings.alembic_directory
        steps = self.registry.steps()
        if not directory or any(revisions.is_revision(s) for s in steps):
            return
        if steps:
            raise ConfigurationError(
                f"the revisions of {directory} must run before the {len(steps)} "
                f"step(s) registered already (first: {steps[0].id} at "
                f"{steps[0].location}), but init_app registers them after; call "
                "migrate.alembic(...) before registering those steps instead",
                key=PREFIX + "ALEMBIC_DIRECTORY",
            )
        self.alembic(directory)

    def _boot(self, settings: MigrateSettings) -> None:
        phases = [Phase.SCHEMA] if settings.on_boot == "schema" else list(Phase)
        try:
            engine = build_migration_engine(settings)
            try:
                report = commands.run(settings, self.registry, engine, phases=phases)
            finally:
                engine.dispose()
        except SafeMigrateError as exc:
            # The message is one line, password hidden; the traceback adds nothing.
            logger.error("safe-migrate: boot run failed: %s", exc)
            if settings.boot_failure == "raise":
                raise
            return
        _log_boot(report)


def _log_boot(report: RunReport) -> None:
    if report.applied:
        logger.info(
            "safe-migrate: %d step(s) applied in %.2fs",
            len(report.applied),
            report.elapsed_seconds,
        )
    else:
        logger.info("safe-migrate: up to date")
    if report.waiting:
        logger.warning(
            "safe-migrate: %d step(s) wait for `flask safe-migrate run`, from %s "
            "(%s phase) on; the app starts without them",
            len(report.waiting),
            report.waiting[0].id,
            report.waiting[0].phase.value,
        )


def _can_boot(settings: MigrateSettings, explicit_url: bool) -> bool:
    """False, with one WARNING line, for the app's own non-PostgreSQL URL (the
    sqlite of most test configs) when no ``SAFE_MIGRATE_DATABASE_URI`` is set."""
    if explicit_url or settings.database_uri is None:
        return True
    try:
        backend = sa.make_url(settings.database_uri).get_backend_name()
    except Exception:  # a malformed URL: the boot run reports it
        return True
    if backend == "postgresql":
        return True
    logger.warning(
        "safe-migrate: SQLALCHEMY_DATABASE_URI is %s, not PostgreSQL, and "
        "SAFE_MIGRATE_DATABASE_URI is not set: boot run skipped",
        backend,
    )
    return False


def is_served() -> bool:
    """Whether the app being created is to be served, so the boot run applies.

    Outside a ``flask`` command (a WSGI server calling the factory, a plain
    ``create_app()``, a test) it is. Under the ``flask`` command (a click context
    holding Flask's :class:`~flask.cli.ScriptInfo`) only ``flask run`` serves:
    ``routes``, ``shell``, ``db ...``, ``--help`` and ``safe-migrate`` load the app
    without migrating it.
    """
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.find_object(ScriptInfo) is None:
        return True
    parent = ctx.parent
    return (
        ctx.command.name == "run"
        and parent is not None
        and isinstance(parent.command, FlaskGroup)
    )


def _as_string(url: str | sa.URL) -> str:
    # render_as_string keeps the password: the engine needs it; it is never logged.
    return url.render_as_string(hide_password=False) if isinstance(url, sa.URL) else url


def _import_step_modules(modules: t.Sequence[str]) -> None:
    """Import each step module; a package's modules are imported in file name
    order (``0001_x``, ``0002_y``; names starting with ``_`` are skipped)."""
    for name in modules:
        package = _import_step_module(name)
        path = getattr(package, "__path__", None)
        if path is None:
            continue
        found = sorted(pkgutil.iter_modules(path), key=lambda info: info.name)
        for info in found:
            if not info.name.startswith("_"):
                _import_step_module(f"{name}.{info.name}")


def _import_step_module(name: str) -> object:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import step module {name!r}: {exc}",
            key=PREFIX + "STEP_MODULES",
        ) from exc
