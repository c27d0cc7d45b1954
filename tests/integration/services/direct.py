"""No pooler at all: the tests' clients reach PostgreSQL itself, through the proxy.

The servers from Python packages are built without OpenSSL, so a direct connection
is in clear; the fault proxy still gives its clients TLS (with a certificate made
here), as it does in front of a pooler.
"""

from __future__ import annotations

import shutil
import typing as t

from .common import PG_PASSWORD
from .common import make_certificate
from .common import make_private_dir
from .common import make_url
from .postgres import Postgres


class Direct:
    """Stands where a pooler would: the same attributes, the server's own port.

    :param postgres: the server the clients connect to.
    """

    label: t.ClassVar[str] = "direct"
    #: The proxy talks to the server in clear.
    tls: t.ClassVar[bool] = False

    def __init__(self, postgres: Postgres) -> None:
        self.postgres = postgres
        self.dir = make_private_dir("safe-migrate-direct-")
        self.cert_file = self.dir / "server.crt"
        self.key_file = self.dir / "server.key"

    def __repr__(self) -> str:
        return f"<Direct port={self.port}>"

    @property
    def port(self) -> int:
        """The server's port."""
        return self.postgres.port

    def start(self) -> None:
        """Make the certificate the fault proxy shows its clients."""
        make_certificate(self.cert_file, self.key_file)

    def cleanup(self) -> None:
        """Delete the certificate."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(
        self,
        dbname: str,
        *,
        driver: str = "postgresql+psycopg2",
        sslmode: str = "disable",
        password: str = PG_PASSWORD,
    ) -> str:
        """Return a direct SQLAlchemy URL to ``dbname`` (no TLS by default)."""
        query = {"sslmode": sslmode}
        return make_url(
            self.port, dbname, driver=driver, password=password, query=query
        )

    def log_tail(self, lines: int = 50) -> str:
        """Return the last ``lines`` lines of the server log."""
        return self.postgres.log_tail(lines)
