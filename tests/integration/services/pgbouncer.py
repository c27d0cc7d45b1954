"""A TLS, SCRAM, transaction-pooling PgBouncer in front of a test PostgreSQL."""

from __future__ import annotations

import typing as t

import psycopg2

from .common import LOCALHOST
from .common import PG_PASSWORD
from .common import PG_USER
from .common import Row
from .common import ServiceError
from .common import find_pgbouncer
from .pooler import Pooler
from .pooler import write_lines
from .postgres import Postgres


class PgBouncer(Pooler):
    """A PgBouncer in front of Postgres: transaction pooling, client TLS, SCRAM.

    :param settings: extra or overriding ``[pgbouncer]`` settings
        (``pool_mode="session"`` for session pooling).
    :param databases: extra ``[databases]`` entries (``*`` is always there).
    """

    label = "PgBouncer"

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
        super().__init__(postgres)
        self.binary = found
        self.ini_file = self.dir / "pgbouncer.ini"
        self.auth_file = self.dir / "userlist.txt"
        self._settings = dict(settings or {})
        self._databases = dict(databases or {})

    @property
    def pool_mode(self) -> str:
        """``transaction`` (the default) or ``session``."""
        return str(self._settings.get("pool_mode", "transaction"))

    def _write_config(self) -> None:
        write_lines(self.auth_file, [f'"{PG_USER}" "{PG_PASSWORD}"'])
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
        lines.extend(f"{name} = {spec}" for name, spec in self._databases.items())
        lines.append(f"* = host={LOCALHOST} port={self.postgres.port}")
        lines.append("")
        lines.append("[pgbouncer]")
        lines.extend(f"{key} = {value}" for key, value in settings.items())
        write_lines(self.ini_file, lines)

    def _command(self) -> list[str]:
        return [self.binary, str(self.ini_file)]

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
