"""Classify database errors: retry on a fresh connection, retry the lock, or fail.

This module is the one table that decides. It is driven, in this order, by:

1. messages that no retry can fix although they arrive at connect time (a wrong
   password, ``SSL required``, an unknown database or role), then poolers' own
   messages whose SQLSTATE says nothing (pgpool-II sends ``XX000``);
2. the SQLSTATE, when there is one (the timeouts, serialization failures, deadlocks,
   admin shutdowns and every ``08`` connection exception);
3. SQLAlchemy's ``connection_invalidated`` flag;
4. the exact libpq and PgBouncer messages of a dropped connection, measured on a real
   PgBouncer (see FAULTS.md in the project): connection-level failures carry *no*
   SQLSTATE, even for ``pg_terminate_backend``, so the message is all there is.

Both drivers are in the one table. They report the same drops differently
(measured through the project's fault proxy and PgBouncer 1.18; psycopg2 2.9 on
libpq 17, psycopg-binary 3.3 on libpq 18, both OpenSSL 3), psycopg2 first:

- a TCP drop of a TLS connection (FIN or RST, idle, in a transaction, mid-query, a
  lost COMMIT reply, a PgBouncer restart): ``SSL SYSCALL error: EOF detected``;
  ``consuming input failed: SSL error: unexpected eof while reading``;
- an RST during a query: ``server closed the connection unexpectedly`` (psycopg 3
  prefixes ``consuming input failed:``);
- ``pg_terminate_backend``, through PgBouncer or direct: no SQLSTATE, ``SSL
  connection has been closed unexpectedly`` or ``server closed the connection
  unexpectedly``; psycopg 3 keeps the server's message: ``AdminShutdown`` 57P01;
- PgBouncer's ``query_wait_timeout``: ``SSL connection has been closed
  unexpectedly``; ``ProtocolViolation`` 08P01 ``query_wait_timeout``;
- reusing a dropped connection: ``InterfaceError: connection already closed``;
  ``OperationalError: the connection is closed``;
- connect-time failures: libpq's ``connection to server at ... failed: ...``; the
  same text after ``connection failed:``.

Timeouts carry the same SQLSTATEs with either driver (57014, 55P03).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import sqlalchemy as sa

__all__ = [
    "ErrorKind",
    "classify_error",
    "describe_error",
    "error_sqlstate",
    "is_disconnect",
    "is_retryable",
]


class ErrorKind(enum.Enum):
    """What to do about an error."""

    #: The connection dropped while in use: dispose the engine, retry the whole
    #: transaction on a fresh connection (after asking whether a COMMIT landed).
    DISCONNECT = "disconnect"
    #: A connection could not be opened for a reason that may pass (refused,
    #: reset during the handshake, server full, pooler queue timeout).
    CONNECT_FAILED = "connect_failed"
    #: ``lock_timeout`` fired (55P03): retry with the lock-retry schedule.
    LOCK_NOT_AVAILABLE = "lock_not_available"
    #: Serialization failure or deadlock: the transaction may simply be retried.
    CONFLICT = "conflict"
    #: Retrying cannot help: syntax, undefined object, permission, bad password,
    #: constraint violation, statement timeout, anything unknown.
    FATAL = "fatal"


#: Kinds the generic retry helper retries.
RETRYABLE_KINDS = frozenset(
    {
        ErrorKind.DISCONNECT,
        ErrorKind.CONNECT_FAILED,
        ErrorKind.LOCK_NOT_AVAILABLE,
        ErrorKind.CONFLICT,
    }
)


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    kind: ErrorKind


def _rule(text: str, kind: ErrorKind) -> _Rule:
    return _Rule(re.compile(re.escape(text), re.IGNORECASE), kind)


#: Messages checked before anything else: connect-time failures no retry can fix.
_FATAL_MESSAGES: tuple[_Rule, ...] = (
    _rule("password authentication failed", ErrorKind.FATAL),
    _rule("SASL authentication failed", ErrorKind.FATAL),
    _rule("no password supplied", ErrorKind.FATAL),
    _rule("SSL required", ErrorKind.FATAL),
    _rule("no pg_hba.conf entry", ErrorKind.FATAL),
    _rule("server does not support SSL", ErrorKind.FATAL),
    _rule("could not translate host name", ErrorKind.FATAL),
    _rule("invalid connection option", ErrorKind.FATAL),
    _rule("invalid sslmode value", ErrorKind.FATAL),
    _Rule(re.compile(r'(database|role) "[^"]*" does not exist'), ErrorKind.FATAL),
    _rule("no such database", ErrorKind.FATAL),  # PgBouncer, unknown database
    _rule("no such user", ErrorKind.FATAL),  # PgBouncer, unknown user
)

#: Poolers' own messages, checked before the SQLSTATE because theirs is generic.
#: Measured through the fault proxy (tests/integration/test_matrix.py): pgpool-II
#: 4.3 sends FATAL ``XX000`` "failed to create a backend 0 connection" to a client
#: that connects while PostgreSQL is down or restarting (psycopg2 shows no
#: SQLSTATE at connect time; the message is the same).
_POOLER_MESSAGES: tuple[_Rule, ...] = (
    _rule("failed to create a backend", ErrorKind.CONNECT_FAILED),  # pgpool-II
)

#: SQLSTATE (exact code or two-character class) -> kind.
_SQLSTATES: dict[str, ErrorKind] = {
    "08": ErrorKind.DISCONNECT,  # connection_exception and all of its class
    "57P01": ErrorKind.DISCONNECT,  # admin_shutdown (pg_terminate_backend)
    "57P02": ErrorKind.DISCONNECT,  # crash_shutdown
    "57P03": ErrorKind.CONNECT_FAILED,  # cannot_connect_now (starting up)
    "53300": ErrorKind.CONNECT_FAILED,  # too_many_connections
    "40001": ErrorKind.CONFLICT,  # serialization_failure
    "40P01": ErrorKind.CONFLICT,  # deadlock_detected
    "55P03": ErrorKind.LOCK_NOT_AVAILABLE,  # lock_not_available (lock_timeout)
    "57014": ErrorKind.FATAL,  # query_canceled (statement_timeout): would fail again
    "28": ErrorKind.FATAL,  # invalid authorization
}

#: libpq / PgBouncer messages of a connection that dropped or could not open.
#: Connect-time messages carry libpq's 'connection to server at "H", port N failed: '
#: prefix; ``_CONNECT_PREFIX`` turns a DISCONNECT match into CONNECT_FAILED.
_TRANSIENT_MESSAGES: tuple[_Rule, ...] = (
    _rule("SSL SYSCALL error", ErrorKind.DISCONNECT),  # EOF detected: any drop
    _rule("SSL connection has been closed unexpectedly", ErrorKind.DISCONNECT),
    _rule("server closed the connection unexpectedly", ErrorKind.DISCONNECT),
    _rule("connection already closed", ErrorKind.DISCONNECT),  # psycopg2 InterfaceError
    # psycopg 3 on libpq 18 / OpenSSL 3: any drop of a TLS connection.
    _rule("SSL error: unexpected eof while reading", ErrorKind.DISCONNECT),
    _rule("the connection is closed", ErrorKind.DISCONNECT),  # psycopg 3, reuse
    _rule("the connection is lost", ErrorKind.DISCONNECT),  # psycopg 3, status BAD
    _rule("terminating connection due to administrator command", ErrorKind.DISCONNECT),
    _rule("server conn crashed", ErrorKind.DISCONNECT),  # PgBouncer
    _rule("connection to server was lost", ErrorKind.DISCONNECT),
    _rule("could not receive data from server", ErrorKind.DISCONNECT),
    _rule("could not send data to server", ErrorKind.DISCONNECT),
    _rule("Connection reset by peer", ErrorKind.DISCONNECT),
    _rule("Broken pipe", ErrorKind.DISCONNECT),
    _rule("lost synchronization with server", ErrorKind.DISCONNECT),
    _rule("unexpected EOF", ErrorKind.DISCONNECT),
    _rule("SSL error", ErrorKind.DISCONNECT),
    _rule("Connection refused", ErrorKind.CONNECT_FAILED),
    _rule("timeout expired", ErrorKind.CONNECT_FAILED),  # connect_timeout
    _rule("Connection timed out", ErrorKind.CONNECT_FAILED),
    _rule("No route to host", ErrorKind.CONNECT_FAILED),
    _rule("Network is unreachable", ErrorKind.CONNECT_FAILED),
    _rule("remaining connection slots are reserved", ErrorKind.CONNECT_FAILED),
    _rule("too many connections", ErrorKind.CONNECT_FAILED),
    _rule("sorry, too many clients already", ErrorKind.CONNECT_FAILED),
    _rule("the database system is starting up", ErrorKind.CONNECT_FAILED),
    _rule("the database system is shutting down", ErrorKind.CONNECT_FAILED),
    _rule("the database system is in recovery mode", ErrorKind.CONNECT_FAILED),
    _rule("query_wait_timeout", ErrorKind.CONNECT_FAILED),  # PgBouncer queue
    _rule("server login has been failing", ErrorKind.CONNECT_FAILED),  # PgBouncer
    _rule("pgbouncer cannot connect to server", ErrorKind.CONNECT_FAILED),
    _rule("no more connections allowed", ErrorKind.CONNECT_FAILED),  # PgBouncer
    _rule("could not connect to server", ErrorKind.CONNECT_FAILED),
    # Nothing after libpq's "failed:": the other end hung up during the login without
    # a word. pgpool-II does that when PostgreSQL, starting up, refuses its backend
    # login (its log: "backend response with kind 'E' when expecting 'R'").
    _Rule(
        re.compile(r'connection to server (at|on) "[^"]*"[^:]*? failed:\s*\Z'),
        ErrorKind.CONNECT_FAILED,
    ),
)

_CONNECT_PREFIX = re.compile(r'connection to server (at|on) "[^"]*".*? failed:', re.S)


def _unwrap(exc: BaseException) -> tuple[BaseException, bool]:
    """Return the DBAPI error behind ``exc`` and SQLAlchemy's invalidation flag."""
    invalidated = False
    inner: BaseException = exc
    if isinstance(exc, sa.exc.DBAPIError):
        invalidated = bool(exc.connection_invalidated)
        if exc.orig is not None:
            inner = exc.orig
    return inner, invalidated


def error_sqlstate(exc: BaseException) -> str | None:
    """Return the SQLSTATE of ``exc`` (or of the DBAPI error it wraps), if any."""
    inner, _ = _unwrap(exc)
    code = getattr(inner, "pgcode", None) or getattr(inner, "sqlstate", None)
    return code if isinstance(code, str) and code else None


def _message(exc: BaseException) -> str:
    inner, _ = _unwrap(exc)
    return str(inner)


def classify_error(exc: BaseException) -> ErrorKind:
    """Decide what to do about ``exc``; see :class:`ErrorKind`.

    Anything that is not a database error (a bug in a step, a ``KeyboardInterrupt``)
    is :attr:`ErrorKind.FATAL`.
    """
    if isinstance(exc, sa.exc.PendingRollbackError):
        # Raised when an invalidated Connection is reused: a fresh one will work.
        return ErrorKind.DISCONNECT
    if isinstance(exc, sa.exc.TimeoutError):
        return ErrorKind.CONNECT_FAILED  # the local pool was exhausted
    inner, invalidated = _unwrap(exc)
    if not _is_database_error(exc, inner):
        return ErrorKind.FATAL
    message = str(inner)
    for rule in (*_FATAL_MESSAGES, *_POOLER_MESSAGES):
        if rule.pattern.search(message):
            return rule.kind
    code = error_sqlstate(exc)
    if code is not None:
        kind = _SQLSTATES.get(code) or _SQLSTATES.get(code[:2])
        if kind is not None:
            return kind
        # Any other SQLSTATE is a server-side verdict on the statement itself.
        return ErrorKind.FATAL
    connect_time = bool(_CONNECT_PREFIX.search(message))
    for rule in _TRANSIENT_MESSAGES:
        if rule.pattern.search(message):
            if rule.kind is ErrorKind.DISCONNECT and connect_time:
                return ErrorKind.CONNECT_FAILED
            return rule.kind
    if invalidated:
        return ErrorKind.DISCONNECT
    return ErrorKind.FATAL


def _is_database_error(exc: BaseException, inner: BaseException) -> bool:
    if isinstance(exc, sa.exc.DBAPIError):
        return True
    module = type(inner).__module__ or ""
    return module.split(".")[0] in {"psycopg2", "psycopg"}


def is_disconnect(exc: BaseException) -> bool:
    """Return whether ``exc`` means the connection dropped or could not be opened."""
    return classify_error(exc) in {ErrorKind.DISCONNECT, ErrorKind.CONNECT_FAILED}


def is_retryable(exc: BaseException) -> bool:
    """Return whether the whole transaction may be retried on a fresh connection."""
    return classify_error(exc) in RETRYABLE_KINDS


def describe_error(exc: BaseException) -> str:
    """Return one readable line for ``exc``: class, SQLSTATE and the first message line.

    libpq may repeat a message twice and spread it over several lines; this keeps the
    first meaningful line, so CLI output and logs stay one line per error.
    """
    inner, _ = _unwrap(exc)
    text = str(inner).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = re.sub(r"\s+", " ", first)
    code = error_sqlstate(exc)
    name = type(inner).__name__
    suffix = f" [SQLSTATE {code}]" if code else ""
    return f"{name}: {first}{suffix}" if first else f"{name}{suffix}"
