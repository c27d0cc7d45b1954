"""The whole exception hierarchy of flask-safe-migrate.

::

    SafeMigrateError                 base; never raised directly
    ├── ConfigurationError           .key: bad or missing SAFE_MIGRATE_* value
    ├── RegistrationError            raised at import/registration time
    │   ├── DuplicateStepError       .step_id
    │   └── StepOrderError           .step_ids: unknown step or phase ordering problem
    ├── LedgerError
    │   └── ChecksumMismatchError    .step_id(s): an applied step's code changed
    ├── DatabaseUnavailableError     .url: cannot connect (unreachable, bad password)
    ├── UnsupportedServerError       .server_version: PostgreSQL older than 13
    ├── LockNotAcquiredError         .key, .waited_seconds: advisory or table lock
    ├── RetryExhaustedError          .attempts, .elapsed_seconds, .last_exception
    ├── StepFailedError              .step_id, .phase; __cause__ has the details
    │   └── StepRefusedError         the step was refused before anything was sent
    ├── StatementFailedError         .sql: a statement run by ``exec`` was rejected
    │   └── StatementRefusedError    not sent: two statements, a session SET...
    ├── BaselineRefusedError         baseline of a database with no tables, no --force
    └── LintViolationError           .findings: error-severity findings blocked a run

Every message is one readable line that says what and where; URLs in messages are
rendered with the password hidden. An error that ends a run carries ``report``: the
partial :class:`~flask_safe_migrate.core.runner.RunReport` (the steps applied
before it), or None when it was not raised by a run.
"""

from __future__ import annotations

import typing as t

__all__ = [
    "BaselineRefusedError",
    "ChecksumMismatchError",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "DuplicateStepError",
    "LedgerError",
    "LintViolationError",
    "LockNotAcquiredError",
    "RegistrationError",
    "RetryExhaustedError",
    "SafeMigrateError",
    "StatementFailedError",
    "StatementRefusedError",
    "StepFailedError",
    "StepOrderError",
    "StepRefusedError",
    "UnsupportedServerError",
]


class SafeMigrateError(Exception):
    """Base of every error this library raises on purpose."""

    #: The partial ``RunReport`` of the run this error ended (set by the run).
    report: t.Any = None


class ConfigurationError(SafeMigrateError):
    """A ``SAFE_MIGRATE_*`` value or setting is missing or invalid.

    :param key: the configuration key at fault, e.g. ``SAFE_MIGRATE_DATABASE_URI``.
    """

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class RegistrationError(SafeMigrateError):
    """A step could not be registered."""


class DuplicateStepError(RegistrationError):
    """Two steps were registered with the same id."""

    def __init__(self, message: str, *, step_id: str) -> None:
        super().__init__(message)
        self.step_id = step_id


class StepOrderError(RegistrationError):
    """An unknown step id was asked for, or steps are in an impossible order."""

    def __init__(self, message: str, *, step_ids: t.Sequence[str]) -> None:
        super().__init__(message)
        self.step_ids = tuple(step_ids)


class LedgerError(SafeMigrateError):
    """The ledger table is missing, unreadable or inconsistent."""


class ChecksumMismatchError(LedgerError):
    """An applied step's SQL or code changed since it was applied."""

    def __init__(self, message: str, *, step_ids: t.Sequence[str]) -> None:
        super().__init__(message)
        self.step_ids = tuple(step_ids)

    @property
    def step_id(self) -> str:
        """The first changed step."""
        return self.step_ids[0]


class DatabaseUnavailableError(SafeMigrateError):
    """The database could not be reached, or refused the credentials.

    :param url: the URL, already rendered with its password hidden.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class UnsupportedServerError(SafeMigrateError):
    """The PostgreSQL server is older than the oldest this library runs on.

    :param server_version: the server's version, e.g. ``(12, 19)``.
    """

    def __init__(self, message: str, *, server_version: tuple[int, ...]) -> None:
        super().__init__(message)
        self.server_version = server_version


class LockNotAcquiredError(SafeMigrateError):
    """A lock could not be had within its budget.

    ``key`` names the lock: ``advisory:<n>`` for the migration lock, or the
    relations a step needed. ``blockers`` describes the sessions seen holding it.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str,
        waited_seconds: float,
        step_id: str | None = None,
        blockers: t.Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.key = key
        self.waited_seconds = waited_seconds
        self.step_id = step_id
        self.blockers = tuple(blockers)


class RetryExhaustedError(SafeMigrateError):
    """Every attempt allowed by the retry policy failed with a retryable error."""

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        elapsed_seconds: float,
        last_exception: BaseException,
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.elapsed_seconds = elapsed_seconds
        self.last_exception = last_exception


class StepFailedError(SafeMigrateError):
    """A step failed; ``__cause__`` is the database error or RetryExhaustedError."""

    def __init__(self, message: str, *, step_id: str, phase: str) -> None:
        super().__init__(message)
        self.step_id = step_id
        self.phase = phase


class StepRefusedError(StepFailedError):
    """A step was refused before anything was sent (invalid SQL, DML in schema...)."""


class StatementFailedError(SafeMigrateError):
    """A statement run on its own (``flask safe-migrate exec``) was rejected."""

    def __init__(self, message: str, *, sql: str) -> None:
        super().__init__(message)
        self.sql = sql


class StatementRefusedError(StatementFailedError):
    """A statement given to ``exec`` was refused before it was sent: more than one
    statement, transaction control, or a session setting that would leak into a
    pooled connection."""


class BaselineRefusedError(SafeMigrateError):
    """``baseline`` was refused: the database has no tables to adopt (use force)."""


class LintViolationError(SafeMigrateError):
    """Error-severity lint findings blocked a run."""

    def __init__(self, message: str, *, findings: t.Sequence[object]) -> None:
        super().__init__(message)
        self.findings = tuple(findings)
