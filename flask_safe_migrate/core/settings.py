"""MigrateSettings: every setting, its default, its validation, and how it is read."""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing as t

from .exceptions import ConfigurationError

__all__ = ["PREFIX", "MigrateSettings"]

PREFIX = "SAFE_MIGRATE_"

_ON_BOOT = ("schema", "all", "off")
_BOOT_FAILURE = ("raise", "log")
_CHANGED_STEPS = ("refuse", "warn")


@dataclasses.dataclass(frozen=True)
class MigrateSettings:
    """Settings of one migrator; the field ``x`` is read from ``SAFE_MIGRATE_X``.

    Durations are float seconds. Build it with :meth:`from_mapping` to get every
    value validated, with errors naming the configuration key.
    """

    #: The migration engine's URL (a pooler URL in production). None falls back to
    #: ``SQLALCHEMY_DATABASE_URI`` in the Flask layer.
    database_uri: str | None = None
    #: Extra ``sqlalchemy.create_engine`` keyword arguments.
    engine_options: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    #: Modules imported at ``init_app`` so their decorators register steps.
    step_modules: tuple[str, ...] = ()
    #: An Alembic (Flask-Migrate) script directory whose revisions ``init_app``
    #: registers as schema steps, as ``migrate.alembic(directory)`` would.
    alembic_directory: str | None = None
    #: Phases run during ``init_app``: ``schema``, ``all`` or ``off``.
    on_boot: str = "schema"
    #: On a failed boot run: ``raise`` (the app does not start) or ``log``.
    boot_failure: str = "raise"
    #: ``application_name`` of the migration connections (seen in pg_stat_activity).
    application_name: str = "safe-migrate"
    #: libpq ``connect_timeout`` of each connection attempt.
    connect_timeout_seconds: float = 10.0
    #: Maximum ``SET LOCAL lock_timeout`` of a schema step attempt.
    lock_timeout_seconds: float = 2.0
    #: First (smallest) lock timeout of the growing lock-retry schedule.
    lock_timeout_initial_seconds: float = 0.1
    #: Total time a schema step may spend retrying its table lock before giving up.
    lock_retry_max_elapsed_seconds: float = 120.0
    #: ``SET LOCAL statement_timeout`` of schema steps and backfill batches.
    statement_timeout_seconds: float | None = None
    #: How long a runner waits for another runner's migration lock before raising.
    advisory_lock_wait_seconds: float = 60.0
    #: Attempts per transaction on disconnects.
    retry_max_attempts: int = 10
    #: Give up retrying a transaction after this long.
    retry_max_elapsed_seconds: float = 120.0
    #: First backoff; doubles each attempt, with full jitter.
    retry_backoff_seconds: float = 0.25
    #: Cap on one backoff sleep.
    retry_backoff_max_seconds: float = 30.0
    #: Ledger table name.
    ledger_table: str = "safe_migrate_ledger"
    #: Ledger schema (None: the connection's current schema, normally ``public``).
    ledger_schema: str | None = None
    #: What ``run`` does with an applied step whose checksum changed: refuse or warn.
    changed_steps: str = "refuse"
    #: First batch size of a backfill (it adapts to the target batch time).
    backfill_batch_size: int = 1000
    #: Target duration of one backfill batch.
    backfill_batch_seconds: float = 0.2
    #: Pause between backfill batches.
    backfill_pause_seconds: float = 0.0
    #: How long an index build's lease lasts without renewal (renewed every third).
    index_lease_seconds: float = 30.0
    #: Lint step SQL before running; error findings block the run.
    lint_on_run: bool = True
    #: Lint rule ids to skip.
    lint_disabled_rules: tuple[str, ...] = ()
    #: The models ``generate`` compares, as ``pkg.module:metadata`` (None: the
    #: Flask-SQLAlchemy ``db`` given to ``init_app``).
    metadata: str | None = None
    #: Tables ``generate`` ignores (``fnmatch`` patterns, with or without schema).
    generate_exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._validate()

    # -- reading ---------------------------------------------------------------

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Return every configuration key, e.g. ``SAFE_MIGRATE_ON_BOOT``."""
        return tuple(PREFIX + f.name.upper() for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(
        cls,
        mapping: t.Mapping[str, t.Any],
        *,
        prefix: str = PREFIX,
        defaults: t.Mapping[str, t.Any] | None = None,
        strict: bool = True,
    ) -> MigrateSettings:
        """Build settings from ``PREFIX``-ed keys of ``mapping`` (a config or environ).

        Values may be typed (a Flask config) or strings (the environment): strings
        are converted. ``defaults`` (field name -> value) sit under the mapping.

        :param strict: reject unknown ``PREFIX``-ed keys (typos) with a suggestion.
        :raises ConfigurationError: naming the key of the first bad value.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, t.Any] = dict(defaults or {})
        for key, raw in mapping.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix) :].lower()
            if name not in fields:
                if strict:
                    close = difflib.get_close_matches(key, cls.keys(), n=1)
                    hint = f" (did you mean {close[0]}?)" if close else ""
                    raise ConfigurationError(f"unknown setting{hint}", key=key)
                continue
            values[name] = raw
        converted = {
            name: _convert(prefix + name.upper(), fields[name], raw)
            for name, raw in values.items()
        }
        return cls(**converted)

    def replace(self, **changes: t.Any) -> MigrateSettings:
        """Return a copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)

    # -- validation ------------------------------------------------------------

    def _validate(self) -> None:
        _choice("on_boot", self.on_boot, _ON_BOOT)
        _choice("boot_failure", self.boot_failure, _BOOT_FAILURE)
        _choice("changed_steps", self.changed_steps, _CHANGED_STEPS)
        for name in (
            "connect_timeout_seconds",
            "lock_timeout_seconds",
            "lock_timeout_initial_seconds",
            "advisory_lock_wait_seconds",
            "retry_backoff_max_seconds",
            "backfill_batch_seconds",
            "index_lease_seconds",
        ):
            _positive(name, getattr(self, name))
        for name in (
            "lock_retry_max_elapsed_seconds",
            "retry_max_elapsed_seconds",
            "retry_backoff_seconds",
            "backfill_pause_seconds",
        ):
            _non_negative(name, getattr(self, name))
        if self.statement_timeout_seconds is not None:
            _positive("statement_timeout_seconds", self.statement_timeout_seconds)
        if self.retry_max_attempts < 1:
            raise ConfigurationError(
                f"must be at least 1, got {self.retry_max_attempts}",
                key=_key("retry_max_attempts"),
            )
        if self.backfill_batch_size < 1:
            raise ConfigurationError(
                f"must be at least 1, got {self.backfill_batch_size}",
                key=_key("backfill_batch_size"),
            )
        if self.lock_timeout_initial_seconds > self.lock_timeout_seconds:
            raise ConfigurationError(
                "must not exceed SAFE_MIGRATE_LOCK_TIMEOUT_SECONDS",
                key=_key("lock_timeout_initial_seconds"),
            )
        if not self.ledger_table or len(self.ledger_table) > 63:
            raise ConfigurationError(
                "must be a table name of 1 to 63 characters", key=_key("ledger_table")
            )
        if self.ledger_schema is not None and not (0 < len(self.ledger_schema) <= 63):
            raise ConfigurationError(
                "must be a schema name of 1 to 63 characters",
                key=_key("ledger_schema"),
            )
        if not self.application_name:
            raise ConfigurationError("must not be empty", key=_key("application_name"))


def _key(name: str) -> str:
    return PREFIX + name.upper()


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigurationError(
            f"must be one of {', '.join(choices)}; got {value!r}", key=_key(name)
        )


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"must be > 0, got {value!r}", key=_key(name))


def _non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ConfigurationError(f"must be >= 0, got {value!r}", key=_key(name))


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _convert(key: str, field: dataclasses.Field[t.Any], raw: t.Any) -> t.Any:
    """Convert ``raw`` to the field's type; a ConfigurationError names ``key``."""
    kind = str(field.type)
    optional = "None" in kind
    if raw is None:
        if optional:
            return None
        raise ConfigurationError("must not be None", key=key)
    try:
        if kind.startswith("bool"):
            return _to_bool(raw)
        if kind.startswith("int"):
            if isinstance(raw, bool):
                raise TypeError
            return int(raw)
        if kind.startswith("float"):
            if isinstance(raw, bool):
                raise TypeError
            if (
                isinstance(raw, str)
                and optional
                and raw.strip().lower()
                in {
                    "",
                    "none",
                    "off",
                }
            ):
                return None
            return float(raw)
        if kind.startswith("tuple"):
            return _to_str_tuple(raw)
        if kind.startswith("dict"):
            value = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
        if kind.startswith("str"):
            if not isinstance(raw, str):
                raise TypeError
            if optional and raw == "":
                return None
            return raw
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"expected {kind.replace(' | None', ' or None')}, got {_show(key, raw)}",
            key=key,
        ) from exc
    raise AssertionError(f"unhandled setting type {kind}")  # pragma: no cover


def _show(key: str, raw: t.Any) -> str:
    # Never echo a value that may hold credentials.
    if key.endswith("DATABASE_URI") or key.endswith("ENGINE_OPTIONS"):
        return f"a value of type {type(raw).__name__}"
    return repr(raw)


def _to_bool(raw: t.Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    raise ValueError(raw)


def _to_str_tuple(raw: t.Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if isinstance(raw, list | tuple) and all(isinstance(x, str) for x in raw):
        return tuple(raw)
    raise TypeError(raw)
