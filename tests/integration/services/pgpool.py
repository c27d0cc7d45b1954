"""A pgpool-II in connection-pooling mode in front of a test PostgreSQL: TLS, SCRAM.

Raw clustering mode with one backend that may never fail over: pgpool-II pools and
caches connections, as a pooler does, and nothing else (no load balancing, no health
checks, no watchdog). Every socket, pid and log file lives in its private directory.
"""

from __future__ import annotations

import shutil
import signal

from .common import LOCALHOST
from .common import PG_PASSWORD
from .common import PG_USER
from .common import ServiceError
from .common import free_port
from .pooler import Pooler
from .pooler import write_lines
from .postgres import Postgres


def find_pgpool() -> str | None:
    """Return the pgpool executable, or None when not installed."""
    return shutil.which("pgpool") or shutil.which(
        "pgpool", path="/usr/sbin:/usr/local/sbin:/usr/local/bin"
    )


class Pgpool(Pooler):
    """pgpool-II (Debian ``pgpool2``) pooling connections to ``postgres``.

    :param settings: extra or overriding ``pgpool.conf`` settings, as SQL-ish literals
        (``{"num_init_children": "16"}``, strings quoted: ``"'on'"``).
    """

    label = "pgpool"
    logs_to_stderr = True
    stop_signal = signal.SIGINT  # fast shutdown: clients are cut off

    def __init__(
        self,
        postgres: Postgres,
        *,
        binary: str | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        found = binary or find_pgpool()
        if found is None:
            raise ServiceError("pgpool not found (Debian package pgpool2)")
        super().__init__(postgres)
        self.binary = found
        self.conf_file = self.dir / "pgpool.conf"
        self.hba_file = self.dir / "pool_hba.conf"
        self.pcp_file = self.dir / "pcp.conf"
        self.passwd_file = self.dir / "pool_passwd"
        self._settings = dict(settings or {})

    def _write_config(self) -> None:
        directory = f"'{self.dir}'"
        settings = {
            "listen_addresses": f"'{LOCALHOST}'",
            "port": str(self.port),
            "socket_dir": directory,
            "pcp_listen_addresses": "''",
            "pcp_port": str(free_port()),
            "pcp_socket_dir": directory,
            "wd_ipc_socket_dir": directory,
            "pid_file_name": f"'{self.dir / 'pgpool.pid'}'",
            "logdir": directory,
            "log_destination": "'stderr'",
            "backend_clustering_mode": "'raw'",
            "backend_hostname0": f"'{LOCALHOST}'",
            "backend_port0": str(self.postgres.port),
            "backend_weight0": "1",
            "backend_flag0": "'DISALLOW_TO_FAILOVER'",
            "failover_on_backend_error": "off",
            "health_check_period": "0",
            "sr_check_period": "0",
            "load_balance_mode": "off",
            "connection_cache": "on",
            "use_watchdog": "off",
            # 48 clients at once, 2 cached backends each: below max_connections.
            "num_init_children": "48",
            "max_pool": "2",
            "connection_life_time": "5",
            "ssl": "on",
            "ssl_cert": f"'{self.cert_file}'",
            "ssl_key": f"'{self.key_file}'",
            "enable_pool_hba": "on",
            "pool_passwd": f"'{self.passwd_file.name}'",
        }
        settings.update(self._settings)
        write_lines(self.conf_file, (f"{k} = {v}" for k, v in settings.items()))
        write_lines(self.hba_file, [f"hostssl all all {LOCALHOST}/32 scram-sha-256"])
        write_lines(self.passwd_file, [f"{PG_USER}:TEXT{PG_PASSWORD}"])
        write_lines(self.pcp_file, [])

    def _command(self) -> list[str]:
        return [
            self.binary,
            "-n",
            "-f",
            str(self.conf_file),
            "-a",
            str(self.hba_file),
            "-F",
            str(self.pcp_file),
        ]
