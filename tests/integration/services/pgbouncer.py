"""A TLS, SCRAM, transaction-pooling PgBouncer in front of a test PostgreSQL."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import typing as t

import psycopg2

from .common import LOCALHOST
from .common import PG_PASSWORD
from .common import PG_USER
from .common import Row
from .common import ServiceError
from .common import find_openssl
from .common import find_pgbouncer
from .common import free_port
from .common import make_private_dir
from .common import make_url
from .common import own_for_server
from .common import run_command
from .common import server_env
from .common import server_user_kwargs
from .common import tail
from .common import wait_until
from .postgres import Postgres


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
        self.dir = make_private_dir("safe-migrate-bouncer-")
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
        run_command(
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
            "listen_addr": LOCALHOST,
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
        lines.append(f"* = host={LOCALHOST} port={self.postgres.port}")
        lines.append("")
        lines.append("[pgbouncer]")
        lines.extend(f"{key} = {value}" for key, value in settings.items())
        self.ini_file.write_text("\n".join(lines) + "\n")
        own_for_server(self.dir)
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
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **server_user_kwargs(),
        )
        process = self.process

        def accepting() -> bool:
            if process.poll() is not None:
                raise ServiceError(
                    f"pgbouncer exited with {process.returncode}:\n{self.log_tail(20)}"
                )
            try:
                with socket.create_connection((LOCALHOST, self.port), timeout=0.5):
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
        return make_url(
            self.port,
            dbname,
            driver=driver,
            password=password,
            query={"sslmode": sslmode},
        )

    def admin(self, command: str) -> list[Row]:
        """Run an admin-console command (``SHOW POOLS``, ``KILL db``); return rows."""
        conn = psycopg2.connect(
            host=LOCALHOST,
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
        return tail(self.log_file, lines)
