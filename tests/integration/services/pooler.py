"""What every pooler the tests start shares: its process, its TLS certificate, its URL.

A pooler runs in the foreground as the server account (so the PID held is its own),
keeps its files in a private directory, and answers clients with TLS and SCRAM.
Subclasses (:class:`~.pgbouncer.PgBouncer`, :class:`~.pgpool.Pgpool`) write their
configuration and name their command line.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import typing as t
from pathlib import Path

from .common import LOCALHOST
from .common import PG_PASSWORD
from .common import ServiceError
from .common import free_port
from .common import make_certificate
from .common import make_private_dir
from .common import make_url
from .common import own_for_server
from .common import server_env
from .common import server_user_kwargs
from .common import tail
from .common import wait_until
from .postgres import Postgres


class Pooler:
    """A pooler process in front of a :class:`Postgres`, started and stopped by PID.

    :param postgres: the server it pools connections to.
    """

    #: Its name in messages and the fixtures' log sections.
    label: t.ClassVar[str] = "pooler"
    #: Whether it writes its log to stderr (captured into ``log_file``).
    logs_to_stderr: t.ClassVar[bool] = False
    #: The signal :meth:`stop` sends by default.
    stop_signal: t.ClassVar[int] = signal.SIGTERM
    #: Whether a client (the fault proxy) speaks TLS to it.
    tls: t.ClassVar[bool] = True

    def __init__(self, postgres: Postgres) -> None:
        self.postgres = postgres
        self.dir = make_private_dir(f"safe-migrate-{self.label.lower()}-")
        self.log_file = self.dir / f"{self.label.lower()}.log"
        self.cert_file = self.dir / "server.crt"
        self.key_file = self.dir / "server.key"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._configured = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} port={self.port} dir={self.dir}>"

    def _write_config(self) -> None:
        """Write the configuration files into :attr:`dir`."""
        raise NotImplementedError

    def _command(self) -> list[str]:
        """Return the command line that runs it in the foreground."""
        raise NotImplementedError

    def _configure(self) -> None:
        make_certificate(self.cert_file, self.key_file)
        self._write_config()
        own_for_server(self.dir)
        self._configured = True

    def start(self, timeout_seconds: float = 15.0) -> None:
        """Start it in the foreground and wait until its port accepts."""
        if self.running:
            raise ServiceError(f"{self.label} is already running")
        if not self._configured:
            self._configure()
        output: t.Any = subprocess.DEVNULL
        if self.logs_to_stderr:
            output = self.log_file.open("ab")
        try:
            self.process = subprocess.Popen(
                self._command(),
                cwd=self.dir,
                env=server_env(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                **server_user_kwargs(),
            )
        finally:
            if output is not subprocess.DEVNULL:
                output.close()
        try:
            wait_until(self._accepting, timeout_seconds, 0.02, message="listening")
        except BaseException:
            self.stop()
            raise

    def _accepting(self) -> bool:
        process = self.process
        if process is None or process.poll() is not None:
            code = None if process is None else process.returncode
            raise ServiceError(f"{self.label} exited with {code}:\n{self.log_tail(20)}")
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, sig: int | None = None, timeout_seconds: float = 10.0) -> None:
        """Send ``sig`` (default :attr:`stop_signal`) and wait for the exit."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(self.stop_signal if sig is None else sig)
            try:
                process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self, sig: int | None = None) -> None:
        """Stop with ``sig`` and start again, on the same port."""
        self.stop(sig)
        self.start()

    def cleanup(self) -> None:
        """Stop it and delete its files."""
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
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def url(
        self,
        dbname: str,
        *,
        driver: str = "postgresql+psycopg2",
        sslmode: str = "require",
        password: str = PG_PASSWORD,
    ) -> str:
        """Return a SQLAlchemy URL to ``dbname`` through it (TLS)."""
        return make_url(
            self.port,
            dbname,
            driver=driver,
            password=password,
            query={"sslmode": sslmode},
        )

    def log_tail(self, lines: int = 50) -> str:
        """Return the last ``lines`` lines of its log."""
        return tail(self.log_file, lines)


def write_lines(path: Path, lines: t.Iterable[str]) -> None:
    """Write ``lines`` to ``path``, one per line, readable by the owner only."""
    path.write_text("".join(f"{line}\n" for line in lines))
    path.chmod(0o600)
