"""SafeMigrate: the Flask extension; reads the settings, runs the schema on boot."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import sys
import typing as t

import click
import sqlalchemy as sa
from flask import Flask
from flask import current_app

from .core import commands
from .core import revisions
from .core.engine import build_migration_engine
from .core.exceptions import ConfigurationError
from .core.exceptions import SafeMigrateError
from .core.settings import PREFIX
from .core.settings import MigrateSettings
from .core.steps import Phase
from .core.steps import Step
from .core.steps import StepRegistrar
from .core.steps import StepRegistry

__all__ = ["SafeMigrate", "get_state", "migration_engine"]

logger = logging.getLogger(__name__)

EXTENSION_KEY = "safe_migrate"
_CLI_NAME = "safe-migrate"
_RESOLVERS = frozenset({"get_command", "resolve_command"})
_FIELDS = frozenset(f.name for f in dataclasses.fields(MigrateSettings))


@dataclasses.dataclass
class _AppState:
    """What one app's migrator knows: its settings (read once) and its steps.

    ``error`` holds a configuration or registration error found while the app was
    being loaded by ``flask safe-migrate``; every subcommand reports it.
    """

    settings: MigrateSettings
    registry: StepRegistry
    error: SafeMigrateError | None = None


class SafeMigrate(StepRegistrar):
    """Exactly-once, pooler-safe migrations for one or more Flask apps.

    :param app: an app to initialize now (or call :meth:`init_app` later).
    :param db: the Flask-SQLAlchemy extension; accepted for symmetry, never used to
        migrate (the migration engine is separate).
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
        if app is not None:
            self.init_app(app, db)

    def add(self, step: Step) -> Step:
        """Register a built step in :attr:`registry` (what ``sql``, ``step``,
        ``index`` and ``backfill`` call)."""
        return self.registry.add(step)

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
        values are then visible in ``app.config``. When the app is loaded to run
        ``flask safe-migrate``, the boot run is skipped (the command does the work
        and reports it) and a configuration error is reported by the command.

        :raises RuntimeError: ``init_app`` was already called for this app.
        :raises ConfigurationError: a bad ``SAFE_MIGRATE_*`` value.
        :raises SafeMigrateError: the boot run failed and ``SAFE_MIGRATE_BOOT_FAILURE``
            is ``raise``.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "SafeMigrate is already initialized on this app: call "
                "init_app(app) once per app (create a new app in each test)"
            )
        from . import cli

        app.cli.add_command(cli.group)
        for_cli = _loaded_for_cli()
        try:
            settings = self._read_settings(app)
            self._register_alembic_directory(settings)
            _import_step_modules(settings.step_modules)
        except SafeMigrateError as exc:
            if not for_cli:
                raise
            app.extensions[EXTENSION_KEY] = _AppState(
                MigrateSettings(), self.registry, error=exc
            )
            return
        app.extensions[EXTENSION_KEY] = _AppState(settings, self.registry)
        if settings.on_boot != "off" and not for_cli:
            self._boot(settings)

    def _read_settings(self, app: Flask) -> MigrateSettings:
        known = set(MigrateSettings.keys())
        mapping: dict[str, t.Any] = {k: v for k, v in os.environ.items() if k in known}
        mapping.update((k, v) for k, v in app.config.items() if k.startswith(PREFIX))
        settings = MigrateSettings.from_mapping(mapping, defaults=self.overrides)
        for field in dataclasses.fields(settings):
            app.config.setdefault(
                PREFIX + field.name.upper(), getattr(settings, field.name)
            )
        if settings.database_uri is None:
            fallback = app.config.get("SQLALCHEMY_DATABASE_URI")
            if isinstance(fallback, str | sa.URL):
                settings = settings.replace(database_uri=str(_as_string(fallback)))
        return settings

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
        if report.applied:
            logger.info(
                "safe-migrate: %d step(s) applied in %.2fs",
                len(report.applied),
                report.elapsed_seconds,
            )
        else:
            logger.info("safe-migrate: up to date")


def _as_string(url: str | sa.URL) -> str:
    # render_as_string keeps the password: the engine needs it; it is never logged.
    return url.render_as_string(hide_password=False) if isinstance(url, sa.URL) else url


def _import_step_modules(modules: t.Sequence[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(
                f"cannot import step module {name!r}: {exc}",
                key=PREFIX + "STEP_MODULES",
            ) from exc


def _loaded_for_cli() -> bool:
    """Whether the ``flask`` command is loading the app to run ``safe-migrate``.

    Click clears the arguments from the context before it resolves the subcommand,
    and the ``flask`` group loads the app while resolving it; the name being
    resolved is only in that frame (``Group.resolve_command``/``get_command``).
    """
    if click.get_current_context(silent=True) is None:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in _RESOLVERS and isinstance(
            frame.f_locals.get("self"), click.Group
        ):
            name = frame.f_locals.get("cmd_name", frame.f_locals.get("name"))
            return bool(name == _CLI_NAME)
        frame = frame.f_back  # type: ignore[assignment]  # None ends the loop
    return False


def get_state(app: Flask | None = None) -> _AppState:
    """Return the migrator state of ``app`` (the current app by default).

    :raises RuntimeError: ``SafeMigrate.init_app`` was not called for the app.
    """
    app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]  # LocalProxy
    try:
        state = app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "SafeMigrate is not initialized on this app: call migrate.init_app(app)"
        ) from None
    assert isinstance(state, _AppState)
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
