"""Process wrappers for PostgreSQL and PgBouncer, and a fault-injecting TLS proxy."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import typing as t
from pathlib import Path

import psycopg2
import psycopg2.extensions
import psycopg2.sql
import sqlalchemy as sa

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
    "wait_until",
]

PG_USER = "postgres"
#: Distinctive, so a test can grep logs and error output for a leaked password.
PG_PASSWORD = "Tst-pw-5f2c9e"
#: The account the servers run as when the tests run as root.
SERVER_ACCOUNT = "postgres"

_LOCALHOST = "127.0.0.1"
_SSL_REQUEST_CODE = 80877103
_GSSENC_REQUEST_CODE = 80877104
_CANCEL_REQUEST_CODE = 80877102
_SSL_REQUEST = struct.pack("!ii", 8, _SSL_REQUEST_CODE)
_COMMIT_RE = re.compile(r"\b(COMMIT|END)\b", re.IGNORECASE)

Row = tuple[t.Any, ...]


class ServiceError(RuntimeError):
    """A test service could not be started or driven."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    predicate: t.Callable[[], object],
    timeout_seconds: float,
    interval: float = 0.05,
    *,
    message: str = "condition",
) -> None:
    """Call ``predicate`` until it returns a truthy value.

    :raises TimeoutError: if it is still falsy after ``timeout_seconds``.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{message} not met within {timeout_seconds} s")
        time.sleep(interval)


def find_pg_bindir() -> Path | None:
    """Return the PostgreSQL server binaries directory, or None when not installed.

    ``SAFE_MIGRATE_PG_BINDIR`` wins; otherwise the newest ``/usr/lib/postgresql/N/bin``,
    then whatever ``initdb`` is on ``PATH``.
    """
    candidates: list[Path] = []
    if env := os.environ.get("SAFE_MIGRATE_PG_BINDIR"):
        candidates.append(Path(env))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for directory in candidates:
        if all(
            (directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")
        ):
            return directory
    return None


def find_pgbouncer() -> str | None:
    """Return the pgbouncer executable, or None when not installed."""
    return shutil.which("pgbouncer") or shutil.which(
        "pgbouncer", path="/usr/sbin:/usr/local/sbin:/usr/local/bin"
    )


def find_openssl() -> str | None:
    """Return the openssl executable, or None when not installed."""
    return shutil.which("openssl")


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _server_user_kwargs() -> dict[str, t.Any]:
    """Popen arguments that drop root to the server account between fork and exec."""
    if not _running_as_root():
        return {}
    return {"user": SERVER_ACCOUNT, "group": SERVER_ACCOUNT, "extra_groups": []}


def _own_for_server(path: Path) -> None:
    """Hand ``path`` (recursively) to the server account when running as root."""
    if not _running_as_root():
        return
    shutil.chown(path, SERVER_ACCOUNT, SERVER_ACCOUNT)
    for root, dirs, files in os.walk(path):
        shutil.chown(root, SERVER_ACCOUNT, SERVER_ACCOUNT)
        for name in dirs + files:
            shutil.chown(os.path.join(root, name), SERVER_ACCOUNT, SERVER_ACCOUNT)


def _make_private_dir(prefix: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o700)
    _own_for_server(directory)
    return directory


def _server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _run(cmd: list[str], *, cwd: Path, as_server: bool = True) -> None:
    result = subprocess.run(
        cmd,
        cwd=cwd,
        env=_server_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **(_server_user_kwargs() if as_server else {}),
    )
    if result.returncode != 0:
        raise ServiceError(
            f"{cmd[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )


def connect_psycopg2(
    url: str | sa.URL, **overrides: t.Any
) -> psycopg2.extensions.connection:
    """Open a raw psycopg2 connection from a SQLAlchemy URL (query args are kwargs)."""
    parsed = sa.make_url(url)
    kwargs: dict[str, t.Any] = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
    }
    kwargs.update(parsed.query)
    kwargs.update(overrides)
    conn: psycopg2.extensions.connection = psycopg2.connect(
        **{k: v for k, v in kwargs.items() if v is not None}
    )
    return conn


def _make_url(
    port: int, dbname: str, *, driver: str, password: str, query: dict[str, str]
) -> str:
    url = sa.URL.create(
        driver,
        username=PG_USER,
        password=password,
        host=_LOCALHOST,
        port=port,
        database=dbname,
        query=query,
    )
    return url.render_as_string(hide_password=False)


# --------------------------------------------------------------------------- PostgreSQL


class Postgres:
    """A private, throwaway PostgreSQL cluster on a free 127.0.0.1 port."""

    def __init__(self, *, bindir: Path | None = None) -> None:
        found = bindir or find_pg_bindir()
        if found is None:
            raise ServiceError("PostgreSQL server binaries not found")
        self.bindir = found
        self.base_dir = _make_private_dir("safe-migrate-pg-")
        self.datadir = self.base_dir / "data"
        self.log_file = self.datadir / "postgresql.log"
        self.port = free_port()
        self._initialized = False
        self._running = False

    def __repr__(self) -> str:
        return f"<Postgres port={self.port} datadir={self.datadir}>"

    def _initdb(self) -> None:
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(PG_PASSWORD + "\n")
        pwfile.chmod(0o600)
        _own_for_server(pwfile)
        _run(
            [
                str(self.bindir / "initdb"),
                "--no-sync",
                "-D",
                str(self.datadir),
                "-U",
                PG_USER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
            ],
            cwd=self.base_dir,
        )
        pwfile.unlink()
        settings = {
            "listen_addresses": f"'{_LOCALHOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.datadir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
            "password_encryption": "'scram-sha-256'",
            "log_min_messages": "warning",
            "logging_collector": "off",
        }
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# flask-safe-migrate test settings\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        (self.datadir / "pg_hba.conf").write_text(
            "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        _own_for_server(self.datadir)
        self._initialized = True

    def start(self) -> None:
        """Initialise the cluster on first use and start it (``pg_ctl -w``)."""
        if not self._initialized:
            self._initdb()
        _run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "start",
            ],
            cwd=self.base_dir,
        )
        self._running = True

    def stop(self, mode: t.Literal["immediate", "fast", "smart"] = "immediate") -> None:
        """Stop the server; safe to call twice."""
        if not self._running:
            return
        self._running = False
        _run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-m",
                mode,
                "-w",
                "stop",
            ],
            cwd=self.base_dir,
        )

    def cleanup(self) -> None:
        """Stop the server and delete its files."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> t.Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def url(self, dbname: str, *, driver: str = "postgresql+psycopg2") -> str:
        """Return a direct (no TLS, no pooler) SQLAlchemy URL to ``dbname``."""
        return _make_url(
            self.port, dbname, driver=driver, password=PG_PASSWORD, query={}
        )

    def connect(self, dbname: str = "postgres") -> psycopg2.extensions.connection:
        """Open a direct autocommit psycopg2 connection as the superuser."""
        conn = psycopg2.connect(
            host=_LOCALHOST,
            port=self.port,
            user=PG_USER,
            password=PG_PASSWORD,
            dbname=dbname,
            connect_timeout=10,
        )
        conn.autocommit = True
        return conn

    def execute(
        self,
        sql: str | psycopg2.sql.Composable,
        params: t.Any = None,
        *,
        dbname: str = "postgres",
    ) -> list[Row]:
        """Run one statement on a fresh direct connection and return its rows."""
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description is not None else []
        finally:
            conn.close()

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE name TEMPLATE template0``."""
        self.execute(
            psycopg2.sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
                psycopg2.sql.Identifier(name)
            )
        )

    def drop_database(self, name: str) -> None:
        """``DROP DATABASE IF EXISTS name WITH (FORCE)``, ending its sessions too."""
        self.execute(
            psycopg2.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg2.sql.Identifier(name)
            )
        )

    def log_tail(self, lines: int = 50) -> str:
        """Return the last ``lines`` lines of the server log."""
        return _tail(self.log_file, lines)


# --------------------------------------------------------------------------- PgBouncer


class PgBouncer:
    """A PgBouncer in front of Postgres: transaction pooling, client TLS, SCRAM.

    :param settings: extra or overriding ``[pgbouncer]`` settings.
    :param databases: extra ``[databases]`` entries (``*`` is always there).
    """

    def __init__(
        self,
        postgres: Postgres,
        *,
        binary: str | None = None,
        settings: t.Mapping[str, object] | None = None,
        databases: t.Mapping[str, str] | None = None,
    ) -> None:
        found = binary or find_pgbouncer()
        if found is None:
            raise ServiceError("pgbouncer not found")
        self.binary = found
        self.postgres = postgres
        self.dir = _make_private_dir("safe-migrate-bouncer-")
        self.ini_file = self.dir / "pgbouncer.ini"
        self.auth_file = self.dir / "userlist.txt"
        self.log_file = self.dir / "pgbouncer.log"
        self.cert_file = self.dir / "server.crt"
        self.key_file = self.dir / "server.key"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._settings = dict(settings or {})
        self._databases = dict(databases or {})
        self._configured = False

    def __repr__(self) -> str:
        return f"<PgBouncer port={self.port} dir={self.dir}>"

    def _configure(self) -> None:
        openssl = find_openssl()
        if openssl is None:
            raise ServiceError("openssl not found")
        _run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-days",
                "2",
                "-keyout",
                str(self.key_file),
                "-out",
                str(self.cert_file),
            ],
            cwd=self.dir,
            as_server=False,
        )
        self.key_file.chmod(0o600)
        self.auth_file.write_text(f'"{PG_USER}" "{PG_PASSWORD}"\n')
        self.auth_file.chmod(0o600)
        settings: dict[str, object] = {
            "listen_addr": _LOCALHOST,
            "listen_port": self.port,
            "unix_socket_dir": str(self.dir),
            "pool_mode": "transaction",
            "auth_type": "scram-sha-256",
            "auth_file": str(self.auth_file),
            "admin_users": PG_USER,
            "client_tls_sslmode": "require",
            "client_tls_cert_file": str(self.cert_file),
            "client_tls_key_file": str(self.key_file),
            "server_tls_sslmode": "disable",
            "ignore_startup_parameters": "extra_float_digits",
            "server_idle_timeout": 5,
            "max_client_conn": 1000,
            "default_pool_size": 40,
            "logfile": str(self.log_file),
        }
        settings.update(self._settings)
        lines = ["[databases]"]
        for name, spec in self._databases.items():
            lines.append(f"{name} = {spec}")
        lines.append(f"* = host={_LOCALHOST} port={self.postgres.port}")
        lines.append("")
        lines.append("[pgbouncer]")
        lines.extend(f"{key} = {value}" for key, value in settings.items())
        self.ini_file.write_text("\n".join(lines) + "\n")
        _own_for_server(self.dir)
        self._configured = True

    def start(self, timeout_seconds: float = 15.0) -> None:
        """Start PgBouncer in the foreground and wait until its port accepts."""
        if self.process is not None and self.process.poll() is None:
            raise ServiceError("PgBouncer is already running")
        if not self._configured:
            self._configure()
        self.process = subprocess.Popen(
            [self.binary, str(self.ini_file)],
            cwd=self.dir,
            env=_server_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **_server_user_kwargs(),
        )
        process = self.process

        def accepting() -> bool:
            if process.poll() is not None:
                raise ServiceError(
                    f"pgbouncer exited with {process.returncode}:\n{self.log_tail(20)}"
                )
            try:
                with socket.create_connection((_LOCALHOST, self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        try:
            wait_until(accepting, timeout_seconds, 0.02, message="pgbouncer listening")
        except BaseException:
            self.stop()
            raise

    def stop(self, sig: int = signal.SIGTERM, timeout_seconds: float = 10.0) -> None:
        """Send ``sig`` (SIGTERM: immediate shutdown) and wait for the exit."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop with ``sig`` (SIGINT: safe shutdown) and start again, same port."""
        self.stop(sig)
        self.start()

    def cleanup(self) -> None:
        """Stop PgBouncer and delete its files."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> t.Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    @property
    def running(self) -> bool:
        """Whether the PgBouncer process is alive."""
        return self.process is not None and self.process.poll() is None

    def url(
        self,
        dbname: str,
        *,
        driver: str = "postgresql+psycopg2",
        sslmode: str = "require",
        password: str = PG_PASSWORD,
    ) -> str:
        """Return a SQLAlchemy URL to ``dbname`` through PgBouncer (TLS)."""
        return _make_url(
            self.port,
            dbname,
            driver=driver,
            password=password,
            query={"sslmode": sslmode},
        )

    def admin(self, command: str) -> list[Row]:
        """Run an admin-console command (``SHOW POOLS``, ``KILL db``); return rows."""
        conn = psycopg2.connect(
            host=_LOCALHOST,
            port=self.port,
            user=PG_USER,
            password=PG_PASSWORD,
            dbname="pgbouncer",
            sslmode="require",
            connect_timeout=10,
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(command)
                return list(cur.fetchall()) if cur.description is not None else []
        finally:
            conn.close()

    def log_tail(self, lines: int = 50) -> str:
        """Return the last ``lines`` lines of the PgBouncer log."""
        return _tail(self.log_file, lines)


# ------------------------------------------------------------------ test database


@dataclasses.dataclass
class TestDatabase:
    """One per-test database, reachable directly and through PgBouncer."""

    __test__: t.ClassVar[bool] = False  # not a pytest test class

    name: str
    direct_url: str
    bouncer_url: str
    postgres: Postgres

    def query(
        self, sql: str | psycopg2.sql.Composable, params: t.Any = None
    ) -> list[Row]:
        """Run ``sql`` on a fresh direct autocommit connection and return its rows."""
        return self.postgres.execute(sql, params, dbname=self.name)

    def scalar(self, sql: str, params: t.Any = None) -> t.Any:
        """Return the first column of the first row of ``sql``, or None."""
        rows = self.query(sql, params)
        return rows[0][0] if rows else None


# -------------------------------------------------------------------- fault proxy

KillMode = t.Literal["fin", "rst"]
_FORWARD, _DROP_REPLY, _KILL = "forward", "drop_reply", "kill"


class _FrameParser:
    """Split a byte stream into protocol frames (type byte + int32 length)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self._buf += data
        frames: list[tuple[bytes, bytes]] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= 5:
            (length,) = struct.unpack_from("!i", buf, pos + 1)
            end = pos + 1 + length
            if length < 4 or len(buf) < end:
                break
            frames.append((bytes(buf[pos : pos + 1]), bytes(buf[pos + 5 : end])))
            pos = end
        del buf[:pos]
        return frames


@dataclasses.dataclass(eq=False)
class _CommitRule:
    action: str
    predicate: t.Callable[[str], bool] | None
    any_query: bool = False  # not only COMMITs: implicit transactions too

    def matches(self, txn_text: str) -> bool:
        return True if self.predicate is None else bool(self.predicate(txn_text))


@dataclasses.dataclass(eq=False)
class _Connection:
    id: int
    opened: float
    client_reader: asyncio.StreamReader
    client_writer: asyncio.StreamWriter
    client_socket: t.Any
    upstream_reader: asyncio.StreamReader | None = None
    upstream_writer: asyncio.StreamWriter | None = None
    upstream_socket: t.Any = None
    txn: list[str] = dataclasses.field(default_factory=list)
    swallow_reply: bool = False
    killed: bool = False
    chaos_handle: asyncio.TimerHandle | None = None
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)


class FaultProxy:
    """A TCP proxy in front of PgBouncer that injects connection faults.

    With ``terminate_tls`` (the default) it answers the client's SSLRequest itself,
    using ``cert_file``/``key_file``, and opens its own TLS connection upstream, so it
    sees the PostgreSQL protocol in clear: it counts round trips, tracks the text of
    the current transaction, and can kill a connection around its COMMIT. Without it,
    bytes are relayed untouched (TLS passthrough) and only the kill features work.

    Everything runs on an asyncio loop in one daemon thread; the public methods are
    thread-safe and take effect before they return. The proxy stops by itself after
    ``max_lifetime_seconds``.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        terminate_tls: bool = True,
        seed: int = 0,
        max_lifetime_seconds: float = 900.0,
        host: str = _LOCALHOST,
    ) -> None:
        if terminate_tls and (cert_file is None or key_file is None):
            raise ValueError("terminate_tls needs cert_file and key_file")
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self.port = 0
        self.terminate_tls = terminate_tls
        self.max_lifetime_seconds = max_lifetime_seconds
        #: Delay added to every forwarded chunk, in each direction.
        self.latency_seconds: float = 0.0
        self._cert_file = cert_file
        self._key_file = key_file
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._listen_socket: socket.socket | None = None
        self._conns: dict[int, _Connection] = {}
        self._next_id = 0
        self._chaos: tuple[float, float, KillMode] | None = None
        self._commit_rule: _CommitRule | None = None
        self._kill_during_auth = False
        self._refuse_rst_until = 0.0
        self._reopen_handle: asyncio.TimerHandle | None = None
        self._stopped = threading.Event()
        self._server_ctx: ssl.SSLContext | None = None
        self._client_ctx: ssl.SSLContext | None = None
        # Counters, guarded by _lock.
        self._round_trips = 0
        self._round_trips_by_conn: dict[int, int] = {}
        self._connections_opened = 0
        self._kills = 0
        self._dropped_commits = 0
        self._refused_connections = 0

    def __repr__(self) -> str:
        upstream = f"{self.upstream_host}:{self.upstream_port}"
        return f"<FaultProxy port={self.port} -> {upstream}>"

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Listen on a free port and start relaying."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy.start() called twice")
        if self.terminate_tls:
            server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_ctx.load_cert_chain(str(self._cert_file), str(self._key_file))
            client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            client_ctx.check_hostname = False
            client_ctx.verify_mode = ssl.CERT_NONE
            self._server_ctx, self._client_ctx = server_ctx, client_ctx
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        self._listen_socket = sock
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _loop, _context: None)
        self._loop = loop
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(loop, started), name=repr(self), daemon=True
        )
        self._thread.start()
        started.result(timeout=10)

    def _thread_main(
        self, loop: asyncio.AbstractEventLoop, started: concurrent.futures.Future[None]
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._listen(self._listen_socket))
                loop.call_later(self.max_lifetime_seconds, self._shutdown_soon)
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            loop.run_forever()
        except BaseException:  # never let a proxy failure reach threading.excepthook
            pass
        finally:
            with contextlib.suppress(BaseException):
                self._close_loop(loop)
            self._stopped.set()

    def _close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns.values()):
            self._kill(conn, "fin", count=False)
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def stop(self) -> None:
        """Close the listener and every connection; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not self._stopped.is_set():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._shutdown_soon)
            thread.join(timeout=10)
        if self._listen_socket is not None:
            self._listen_socket.close()

    def _shutdown_soon(self) -> None:
        assert self._loop is not None
        self._loop.create_task(self._shutdown())

    async def _shutdown(self) -> None:
        self._chaos = None
        if self._reopen_handle is not None:
            self._reopen_handle.cancel()
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns.values()):
            self._kill(conn, "fin", count=False)
        await asyncio.sleep(0)
        assert self._loop is not None
        self._loop.stop()

    def __enter__(self) -> t.Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the proxy thread is alive."""
        return self._thread is not None and not self._stopped.is_set()

    def url(self, dbname: str, *, driver: str = "postgresql+psycopg2") -> str:
        """Return a SQLAlchemy URL to ``dbname`` through the proxy (TLS required)."""
        return _make_url(
            self.port,
            dbname,
            driver=driver,
            password=PG_PASSWORD,
            query={"sslmode": "require"},
        )

    def _call(self, fn: t.Callable[[], t.Any], default: t.Any = None) -> t.Any:
        """Run ``fn`` on the proxy loop and wait for its (awaited) result.

        Before start or after stop there is no loop: a plain ``fn`` runs here, a
        coroutine ``fn`` is dropped and ``default`` returned.
        """
        loop = self._loop
        if loop is None or not self.running:
            result = fn()
            if asyncio.iscoroutine(result):
                result.close()
                return default
            return result

        async def runner() -> t.Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        coro = runner()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop closed in the meantime
            coro.close()
            return default
        try:
            return future.result(timeout=10)
        except concurrent.futures.CancelledError:  # the proxy stopped meanwhile
            return default

    # ---------------------------------------------------------------- counters

    @property
    def round_trips(self) -> int:
        """Query ('Q') and Sync ('S') messages from clients since the last reset."""
        with self._lock:
            return self._round_trips

    @property
    def round_trips_by_connection(self) -> list[int]:
        """Round trips per connection (those with any since the reset), oldest first."""
        with self._lock:
            return list(self._round_trips_by_conn.values())

    @property
    def connections_opened(self) -> int:
        """Client connections accepted (not refused) since the last reset."""
        with self._lock:
            return self._connections_opened

    @property
    def kills(self) -> int:
        """Connections killed by the proxy (any feature) since the last reset."""
        with self._lock:
            return self._kills

    @property
    def dropped_commits(self) -> int:
        """COMMIT replies swallowed since the last reset."""
        with self._lock:
            return self._dropped_commits

    @property
    def refused_connections(self) -> int:
        """Connections accepted and reset by ``refuse_connects(mode="rst")``."""
        with self._lock:
            return self._refused_connections

    @property
    def active_connections(self) -> int:
        """Client connections open right now."""
        return len(self._conns)

    def reset_counters(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._round_trips = 0
            self._round_trips_by_conn.clear()
            self._connections_opened = 0
            self._kills = 0
            self._dropped_commits = 0
            self._refused_connections = 0

    # ---------------------------------------------------------------- faults

    def kill_all(self, mode: KillMode = "fin") -> int:
        """Kill every open client connection and its upstream at once; return how many.

        ``fin`` closes without TLS close_notify; ``rst`` resets (SO_LINGER 0).
        """
        _check_mode(mode)

        async def kill_all() -> int:
            conns = list(self._conns.values())
            for conn in conns:
                self._kill(conn, mode)
            # Let the transports really close their sockets before returning.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return len(conns)

        return int(self._call(kill_all, default=0))

    def chaos(
        self, min_seconds: float, max_seconds: float, mode: KillMode = "fin"
    ) -> None:
        """Kill each connection after a random delay drawn from [min, max].

        New connections count from when they were accepted, current ones from now.
        """
        _check_mode(mode)
        if not 0 <= min_seconds <= max_seconds:
            raise ValueError("need 0 <= min_seconds <= max_seconds")

        def enable() -> None:
            self._chaos = (min_seconds, max_seconds, mode)
            for conn in self._conns.values():
                self._schedule_chaos(conn)

        self._call(enable)

    def chaos_off(self) -> None:
        """Stop killing connections at random."""

        def disable() -> None:
            self._chaos = None
            for conn in self._conns.values():
                if conn.chaos_handle is not None:
                    conn.chaos_handle.cancel()
                    conn.chaos_handle = None

        self._call(disable)

    def drop_commit_reply(self, filter: t.Callable[[str], bool] | None = None) -> None:
        """Forward matching COMMITs, then kill the connection instead of the reply.

        A client Query containing COMMIT or END matches when ``filter(txn_text)``
        is true (always when ``filter`` is None); ``txn_text`` is every Query text
        of the current transaction joined by newlines. Replaces any other commit rule.
        """
        self._set_commit_rule(_CommitRule(_DROP_REPLY, filter))

    def drop_reply(self, filter: t.Callable[[str], bool]) -> None:
        """Forward a Query for which ``filter(txn_text)`` is true, then kill the
        connection instead of the reply: an ambiguous commit of an implicit
        (single-message) transaction. Replaces any commit rule."""
        self._set_commit_rule(_CommitRule(_DROP_REPLY, filter, any_query=True))

    def drop_commit_reply_off(self) -> None:
        """Stop dropping (or killing before) COMMITs."""
        self._set_commit_rule(None)

    def drop_each_commit_once(self, key: t.Callable[[str], t.Hashable | None]) -> None:
        """Drop the COMMIT reply the first time a non-None ``key(txn_text)`` is seen."""
        seen: set[t.Hashable] = set()

        def first_time(txn_text: str) -> bool:
            value = key(txn_text)
            if value is None or value in seen:
                return False
            seen.add(value)
            return True

        self._set_commit_rule(_CommitRule(_DROP_REPLY, first_time))

    def kill_before_commit(self, filter: t.Callable[[str], bool] | None = None) -> None:
        """Kill the connection instead of forwarding a matching COMMIT."""
        self._set_commit_rule(_CommitRule(_KILL, filter))

    def _set_commit_rule(self, rule: _CommitRule | None) -> None:
        def assign() -> None:
            self._commit_rule = rule

        self._call(assign)

    def kill_during_auth(self, enabled: bool = True) -> None:
        """Kill new connections when the client sends its SASL response (mid-auth)."""

        def assign() -> None:
            self._kill_during_auth = enabled

        self._call(assign)

    def refuse_connects(
        self, seconds: float, mode: t.Literal["rst", "close"] = "rst"
    ) -> None:
        """Refuse new connections for ``seconds``.

        ``rst`` accepts and resets them at once; ``close`` closes the listener, so
        connects get ECONNREFUSED, and reopens it on the same port afterwards.
        """
        if mode not in ("rst", "close"):
            raise ValueError(f"unknown mode {mode!r}")

        async def refuse() -> None:
            assert self._loop is not None
            if mode == "rst":
                self._refuse_rst_until = self._loop.time() + seconds
                return
            if self._reopen_handle is not None:
                self._reopen_handle.cancel()
            if self._server is not None:
                self._server.close()
                self._server = None
            if self._listen_socket is not None:
                self._listen_socket.close()
                self._listen_socket = None
            self._reopen_handle = self._loop.call_later(seconds, self._reopen_soon)

        self._call(refuse)

    def _reopen_soon(self) -> None:
        assert self._loop is not None
        self._reopen_handle = None
        self._loop.create_task(self._listen(None))

    async def _listen(self, sock: socket.socket | None) -> None:
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            self._listen_socket = sock
        self._server = await asyncio.start_server(self._handle, sock=sock, backlog=512)

    # ---------------------------------------------------------------- per connection

    def _schedule_chaos(self, conn: _Connection) -> None:
        chaos = self._chaos
        if chaos is None or conn.killed:
            return
        assert self._loop is not None
        low, high, mode = chaos
        if conn.chaos_handle is not None:
            conn.chaos_handle.cancel()
        conn.chaos_handle = self._loop.call_later(
            self._rng.uniform(low, high), self._kill, conn, mode
        )

    def _kill(self, conn: _Connection, mode: KillMode, *, count: bool = True) -> None:
        if conn.killed:
            return
        conn.killed = True
        if count:
            with self._lock:
                self._kills += 1
        if conn.chaos_handle is not None:
            conn.chaos_handle.cancel()
        for writer, sock in (
            (conn.client_writer, conn.client_socket),
            (conn.upstream_writer, conn.upstream_socket),
        ):
            if writer is None:
                continue
            if mode == "rst" and sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
            with contextlib.suppress(Exception):
                writer.transport.abort()
        for task in conn.tasks:
            task.cancel()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        sock = writer.get_extra_info("socket")
        # asyncio sets TCP_NODELAY only when the socket's proto is IPPROTO_TCP, which an
        # accepted socket of a plain socket() listener is not: without it, Nagle plus
        # delayed ACKs add 40 ms to every handshake step.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if loop.time() < self._refuse_rst_until:
            with self._lock:
                self._refused_connections += 1
            # Wait for the client's first packet, so the reset reliably hits a client
            # that is past connect() and waiting for an answer.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.read(8), timeout=1)
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            writer.transport.abort()
            return
        with self._lock:
            self._next_id += 1
            conn = _Connection(self._next_id, loop.time(), reader, writer, sock)
            self._connections_opened += 1
        self._conns[conn.id] = conn
        self._schedule_chaos(conn)
        try:
            await self._serve(conn)
        except (Exception, asyncio.CancelledError):
            pass  # any failure ends this connection only
        finally:
            self._conns.pop(conn.id, None)
            if conn.chaos_handle is not None:
                conn.chaos_handle.cancel()
            for task in conn.tasks:
                task.cancel()
            for w in (conn.client_writer, conn.upstream_writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.transport.abort()

    async def _serve(self, conn: _Connection) -> None:
        reader, writer = conn.client_reader, conn.client_writer
        packet = await _read_initial_packet(reader)
        while _packet_code(packet) == _GSSENC_REQUEST_CODE:
            writer.write(b"N")
            await writer.drain()
            packet = await _read_initial_packet(reader)
        code = _packet_code(packet)
        if not self.terminate_tls or code == _CANCEL_REQUEST_CODE:
            await self._open_upstream(conn, tls=False)
            await self._relay(conn, packet, parse=False)
            return
        tls = code == _SSL_REQUEST_CODE
        if tls:
            assert self._server_ctx is not None
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(self._server_ctx, ssl_handshake_timeout=10)
            packet = await _read_initial_packet(reader)
        await self._open_upstream(conn, tls=tls)
        await self._relay(conn, packet, parse=True)

    async def _open_upstream(self, conn: _Connection, *, tls: bool) -> None:
        up_reader, up_writer = await asyncio.open_connection(
            self.upstream_host, self.upstream_port
        )
        conn.upstream_reader, conn.upstream_writer = up_reader, up_writer
        conn.upstream_socket = up_writer.get_extra_info("socket")
        if conn.killed:
            raise ConnectionAbortedError("killed while connecting upstream")
        if tls:
            assert self._client_ctx is not None
            up_writer.write(_SSL_REQUEST)
            await up_writer.drain()
            answer = await up_reader.readexactly(1)
            if answer != b"S":
                raise ServiceError(f"upstream refused TLS: {answer!r}")
            await up_writer.start_tls(self._client_ctx, ssl_handshake_timeout=10)

    async def _relay(self, conn: _Connection, first: bytes, *, parse: bool) -> None:
        assert conn.upstream_reader is not None
        assert conn.upstream_writer is not None
        to_server: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        to_client: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        self._enqueue(to_server, first)
        loop = asyncio.get_running_loop()
        from_client = loop.create_task(self._pump_client(conn, to_server, parse))
        from_server = loop.create_task(
            self._pump_server(conn, conn.upstream_reader, to_client, parse)
        )
        send_server = loop.create_task(self._send(to_server, conn.upstream_writer))
        send_client = loop.create_task(self._send(to_client, conn.client_writer))
        conn.tasks.extend([from_client, from_server, send_server, send_client])
        if conn.killed:
            return
        done, _ = await asyncio.wait(
            {from_client, from_server}, return_when="FIRST_COMPLETED"
        )
        # One side hung up: let what it said reach the other side, then close both.
        sender = send_server if from_client in done else send_client
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(sender), timeout=5)
        for writer in (conn.client_writer, conn.upstream_writer):
            with contextlib.suppress(Exception):
                writer.close()

    def _enqueue(
        self, queue: asyncio.Queue[tuple[float, bytes | None]], data: bytes | None
    ) -> None:
        latency = self.latency_seconds
        due = asyncio.get_running_loop().time() + latency if latency > 0 else 0.0
        queue.put_nowait((due, data))

    async def _send(
        self,
        queue: asyncio.Queue[tuple[float, bytes | None]],
        writer: asyncio.StreamWriter,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            if data is None:
                return
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()

    async def _pump_client(
        self,
        conn: _Connection,
        queue: asyncio.Queue[tuple[float, bytes | None]],
        parse: bool,
    ) -> None:
        parser = _FrameParser()
        try:
            while True:
                data = await conn.client_reader.read(65536)
                if not data:
                    return
                verdict = (
                    self._inspect_client(conn, parser.feed(data)) if parse else _FORWARD
                )
                if verdict == _KILL:
                    self._kill(conn, "fin")
                    return
                if verdict == _DROP_REPLY:
                    conn.swallow_reply = True
                self._enqueue(queue, data)
        finally:
            self._enqueue(queue, None)

    async def _pump_server(
        self,
        conn: _Connection,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes | None]],
        parse: bool,
    ) -> None:
        parser = _FrameParser()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                if conn.swallow_reply:
                    # The COMMIT reached the server and its answer is here: lose it.
                    with self._lock:
                        self._dropped_commits += 1
                    self._kill(conn, "fin")
                    return
                if parse:
                    for kind, body in parser.feed(data):
                        if kind == b"Z" and body[:1] == b"I":
                            conn.txn.clear()
                self._enqueue(queue, data)
        finally:
            self._enqueue(queue, None)

    def _inspect_client(
        self, conn: _Connection, frames: list[tuple[bytes, bytes]]
    ) -> str:
        verdict = _FORWARD
        for kind, body in frames:
            if kind in (b"Q", b"S"):
                with self._lock:
                    self._round_trips += 1
                    self._round_trips_by_conn[conn.id] = (
                        self._round_trips_by_conn.get(conn.id, 0) + 1
                    )
            if kind == b"p" and self._kill_during_auth:
                return _KILL
            if kind == b"P":
                parts = body.split(b"\0", 2)
                if len(parts) >= 2:
                    conn.txn.append(parts[1].decode("utf-8", "replace"))
            if kind == b"Q":
                text = body.rstrip(b"\0").decode("utf-8", "replace")
                conn.txn.append(text)
                rule = self._commit_rule
                if (
                    rule is not None
                    and (rule.any_query or _COMMIT_RE.search(text))
                    and rule.matches("\n".join(conn.txn))
                ):
                    if rule.action == _KILL:
                        return _KILL
                    verdict = rule.action
        return verdict


async def _read_initial_packet(reader: asyncio.StreamReader) -> bytes:
    """Read an untyped startup-phase packet: int32 length (itself included) + body."""
    header = await reader.readexactly(8)
    (length,) = struct.unpack("!i", header[:4])
    if not 8 <= length <= 10_000:
        raise ServiceError(f"bad startup packet length {length}")
    return header + await reader.readexactly(length - 8)


def _packet_code(packet: bytes) -> int:
    code: int = struct.unpack("!i", packet[4:8])[0]
    return code


def _check_mode(mode: str) -> None:
    if mode not in ("fin", "rst"):
        raise ValueError(f"unknown kill mode {mode!r}")
