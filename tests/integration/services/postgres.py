"""A private, throwaway PostgreSQL cluster for the tests."""

from __future__ import annotations

import shutil
import typing as t
from pathlib import Path

import psycopg2
import psycopg2.extensions
import psycopg2.sql

from .common import LOCALHOST
from .common import PG_PASSWORD
from .common import PG_USER
from .common import Row
from .common import ServiceError
from .common import find_pg_bindir
from .common import free_port
from .common import make_private_dir
from .common import make_url
from .common import own_for_server
from .common import run_command
from .common import tail


class Postgres:
    """A private, throwaway PostgreSQL cluster on a free 127.0.0.1 port."""

    def __init__(self, *, bindir: Path | None = None) -> None:
        found = bindir or find_pg_bindir()
        if found is None:
            raise ServiceError("PostgreSQL server binaries not found")
        self.bindir = found
        self.base_dir = make_private_dir("safe-migrate-pg-")
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
        own_for_server(pwfile)
        run_command(
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
            "listen_addresses": f"'{LOCALHOST}'",
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
        own_for_server(self.datadir)
        self._initialized = True

    def start(self) -> None:
        """Initialise the cluster on first use and start it (``pg_ctl -w``)."""
        if not self._initialized:
            self._initdb()
        run_command(
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
        run_command(
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
        return make_url(
            self.port, dbname, driver=driver, password=PG_PASSWORD, query={}
        )

    def connect(self, dbname: str = "postgres") -> psycopg2.extensions.connection:
        """Open a direct autocommit psycopg2 connection as the superuser."""
        conn = psycopg2.connect(
            host=LOCALHOST,
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
        return tail(self.log_file, lines)
