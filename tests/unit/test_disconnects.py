"""The classification table: every FAULTS.md message and SQLSTATE, retry or fail."""

from __future__ import annotations

import psycopg
import psycopg.errors
import psycopg2
import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.disconnects import ErrorKind
from flask_safe_migrate.core.disconnects import classify_error
from flask_safe_migrate.core.disconnects import describe_error
from flask_safe_migrate.core.disconnects import is_disconnect
from flask_safe_migrate.core.disconnects import is_retryable

PREFIX = 'connection to server at "127.0.0.1", port 6432 failed: '
RST = (
    "server closed the connection unexpectedly\n\tThis probably means the server "
    "terminated abnormally\n\tbefore or while processing the request.\n"
)


class CodedError(psycopg2.OperationalError):
    """A psycopg2 error carrying a SQLSTATE, as the server would send it."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self._code = code

    @property
    def pgcode(self) -> str:  # type: ignore[override]  # the stub says attribute
        return self._code


def wrapped(orig: Exception, *, invalidated: bool = False) -> sa.exc.DBAPIError:
    """Wrap a DBAPI error the way SQLAlchemy does."""
    return sa.exc.OperationalError(
        "SELECT 1", {}, orig, connection_invalidated=invalidated
    )


@pytest.mark.parametrize(
    ("message", "invalidated", "kind"),
    [
        ("SSL SYSCALL error: EOF detected", True, ErrorKind.DISCONNECT),
        ("SSL connection has been closed unexpectedly", True, ErrorKind.DISCONNECT),
        (RST + RST, True, ErrorKind.DISCONNECT),
        ("connection already closed", False, ErrorKind.DISCONNECT),
        (
            PREFIX + "Connection refused\n\tIs the server running?",
            False,
            ErrorKind.CONNECT_FAILED,
        ),
        (PREFIX + RST, False, ErrorKind.CONNECT_FAILED),
        (PREFIX + "SSL SYSCALL error: EOF detected", False, ErrorKind.CONNECT_FAILED),
        (
            PREFIX + "FATAL:  remaining connection slots are reserved for "
            "non-replication superuser connections",
            False,
            ErrorKind.CONNECT_FAILED,
        ),
        ("FATAL:  query_wait_timeout", True, ErrorKind.CONNECT_FAILED),
        (PREFIX + "FATAL:  SASL authentication failed", False, ErrorKind.FATAL),
        (
            PREFIX + 'FATAL:  password authentication failed for user "x"',
            False,
            ErrorKind.FATAL,
        ),
        (PREFIX + "FATAL:  SSL required", False, ErrorKind.FATAL),
        (PREFIX + 'FATAL:  database "nope" does not exist', False, ErrorKind.FATAL),
        (
            'could not translate host name "db.invalid" to address',
            False,
            ErrorKind.FATAL,
        ),
        ("something nobody has seen", False, ErrorKind.FATAL),
        ("something nobody has seen", True, ErrorKind.DISCONNECT),
    ],
)
def test_messages_are_classified(
    message: str, invalidated: bool, kind: ErrorKind
) -> None:
    """Each measured libpq/PgBouncer message maps to its kind."""
    orig = psycopg2.OperationalError(message)
    assert classify_error(wrapped(orig, invalidated=invalidated)) is kind
    if not invalidated:  # the raw psycopg2 error classifies the same way
        assert classify_error(orig) is kind


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("08006", ErrorKind.DISCONNECT),
        ("08001", ErrorKind.DISCONNECT),
        ("57P01", ErrorKind.DISCONNECT),
        ("57P02", ErrorKind.DISCONNECT),
        ("57P03", ErrorKind.CONNECT_FAILED),
        ("53300", ErrorKind.CONNECT_FAILED),
        ("40001", ErrorKind.CONFLICT),
        ("40P01", ErrorKind.CONFLICT),
        ("55P03", ErrorKind.LOCK_NOT_AVAILABLE),
        ("57014", ErrorKind.FATAL),
        ("42601", ErrorKind.FATAL),
        ("42P01", ErrorKind.FATAL),
        ("42501", ErrorKind.FATAL),
        ("23505", ErrorKind.FATAL),
        ("28P01", ErrorKind.FATAL),
    ],
)
def test_sqlstates_are_classified(code: str, kind: ErrorKind) -> None:
    """SQLSTATE classes and codes decide when present."""
    assert classify_error(wrapped(CodedError("boom", code))) is kind


PGPOOL_DOWN = (
    "FATAL:  failed to create a backend 0 connection\n"
    "DETAIL:  not executing failover because failover_on_backend_error is off\n"
)


@pytest.mark.parametrize(
    "orig",
    [
        psycopg2.OperationalError(PREFIX + PGPOOL_DOWN),  # psycopg2: no SQLSTATE
        CodedError(PGPOOL_DOWN, "XX000"),  # what pgpool-II sends on the wire
    ],
)
def test_pgpool_backend_down_is_a_connect_failure(orig: Exception) -> None:
    """pgpool-II's 'failed to create a backend 0 connection' (PostgreSQL down
    behind it) is retried like a refused connection, whatever its SQLSTATE says."""
    assert classify_error(wrapped(orig)) is ErrorKind.CONNECT_FAILED
    assert classify_error(wrapped(CodedError("other", "XX000"))) is ErrorKind.FATAL


def test_a_login_cut_off_without_a_word_is_a_connect_failure() -> None:
    """libpq's message ending at 'failed:' (pgpool-II hanging up while PostgreSQL
    starts) is retried; the same prefix followed by a reason is judged by it."""
    silent = psycopg2.OperationalError(PREFIX + "\n")
    assert classify_error(wrapped(silent)) is ErrorKind.CONNECT_FAILED
    bad_password = PREFIX + 'FATAL:  password authentication failed for user "x"\n'
    assert classify_error(psycopg2.OperationalError(bad_password)) is ErrorKind.FATAL
    unknown = psycopg2.OperationalError(PREFIX + "something nobody has seen\n")
    assert classify_error(unknown) is ErrorKind.FATAL


def test_non_database_errors_are_fatal() -> None:
    """A bug in a step is not retried."""
    assert classify_error(ValueError("bug")) is ErrorKind.FATAL
    assert not is_retryable(KeyError("x"))


def test_pending_rollback_means_use_a_fresh_connection() -> None:
    """Reusing an invalidated Connection is treated as a drop."""
    assert is_disconnect(sa.exc.PendingRollbackError("invalidated"))


def test_describe_error_is_one_line() -> None:
    """libpq's repeated multi-line text is described in one line with its SQLSTATE."""
    text = describe_error(wrapped(psycopg2.OperationalError(RST + RST)))
    assert text == "OperationalError: server closed the connection unexpectedly"
    coded = describe_error(
        wrapped(CodedError("canceling statement due to lock timeout", "55P03"))
    )
    assert coded.endswith("[SQLSTATE 55P03]")
    assert "\n" not in coded


PG3_EOF = "consuming input failed: SSL error: unexpected eof while reading"
PG3_PREFIX = "connection failed: " + PREFIX


@pytest.mark.parametrize(
    ("orig", "invalidated", "kind"),
    [
        (psycopg.OperationalError(PG3_EOF), True, ErrorKind.DISCONNECT),
        (
            psycopg.OperationalError("consuming input failed: " + RST + RST),
            True,
            ErrorKind.DISCONNECT,
        ),
        (
            psycopg.OperationalError("the connection is closed"),
            False,
            ErrorKind.DISCONNECT,
        ),
        (
            psycopg.OperationalError("the connection is lost"),
            False,
            ErrorKind.DISCONNECT,
        ),
        (
            psycopg.errors.AdminShutdown(
                "terminating connection due to administrator command"
            ),
            True,
            ErrorKind.DISCONNECT,
        ),
        (
            psycopg.errors.ProtocolViolation("query_wait_timeout"),
            True,
            ErrorKind.DISCONNECT,
        ),
        (
            psycopg.OperationalError(
                PG3_PREFIX + "Connection refused\n\tIs the server running?"
            ),
            False,
            ErrorKind.CONNECT_FAILED,
        ),
        (
            psycopg.OperationalError(
                PG3_PREFIX + "SSL error: unexpected eof while reading"
            ),
            False,
            ErrorKind.CONNECT_FAILED,
        ),
        (
            psycopg.OperationalError("connection timeout expired"),
            False,
            ErrorKind.CONNECT_FAILED,
        ),
        (
            psycopg.OperationalError(PG3_PREFIX + "FATAL:  SASL authentication failed"),
            False,
            ErrorKind.FATAL,
        ),
        (
            psycopg.OperationalError(PG3_PREFIX + "FATAL:  SSL required"),
            False,
            ErrorKind.FATAL,
        ),
        (
            psycopg.errors.QueryCanceled(
                "canceling statement due to statement timeout"
            ),
            False,
            ErrorKind.FATAL,
        ),
        (
            psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"),
            False,
            ErrorKind.LOCK_NOT_AVAILABLE,
        ),
    ],
    ids=lambda value: (
        value if not isinstance(value, Exception) else type(value).__name__
    ),
)
def test_psycopg3_errors_are_classified(
    orig: Exception, invalidated: bool, kind: ErrorKind
) -> None:
    """psycopg 3's classes, messages and SQLSTATEs of the same faults (FAULTS.md)."""
    assert classify_error(wrapped(orig, invalidated=invalidated)) is kind
    assert classify_error(orig) is kind


def test_psycopg3_sqlstate_is_read_and_described() -> None:
    """psycopg 3 names the code ``sqlstate`` (psycopg2: ``pgcode``); both are read."""
    exc = psycopg.errors.AdminShutdown("terminating connection")
    assert describe_error(exc).endswith("[SQLSTATE 57P01]")
