"""What every test service shares: the account, ports, waiting, private dirs, URLs."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import typing as t
from pathlib import Path

import psycopg2
import psycopg2.extensions
import sqlalchemy as sa

PG_USER = "postgres"
#: Distinctive, so a test can grep logs and error output for a leaked password.
PG_PASSWORD = "Tst-pw-5f2c9e"
#: The account the servers run as when the tests run as root.
SERVER_ACCOUNT = "postgres"

LOCALHOST = "127.0.0.1"
#: The checkout these tests belong to.
REPO_ROOT = Path(__file__).resolve().parents[3]

Row = tuple[t.Any, ...]


class ServiceError(RuntimeError):
    """A test service could not be started or driven."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
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


def find_pg_bindir(major: int | None = None) -> Path | None:
    """Return the PostgreSQL server binaries directory, or None when not installed.

    ``SAFE_MIGRATE_PG_BINDIR`` wins; otherwise ``/usr/lib/postgresql/N/bin`` (the
    newest N, or ``major``), then ``.venv/pg/<major>/bin`` (``scripts/install-pg.sh``),
    then whatever ``initdb`` is on ``PATH`` (when no ``major`` is asked for).
    """
    candidates: list[Path] = []
    if env := os.environ.get("SAFE_MIGRATE_PG_BINDIR"):
        candidates.append(Path(env))
    if major is not None:
        candidates.append(Path(f"/usr/lib/postgresql/{major}/bin"))
        candidates.append(REPO_ROOT / ".venv" / "pg" / str(major) / "bin")
    else:
        candidates.extend(
            sorted(
                Path("/usr/lib/postgresql").glob("*/bin"),
                key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                reverse=True,
            )
        )
        if initdb := shutil.which("initdb"):
            candidates.append(Path(initdb).resolve().parent)
    for directory in candidates:
        if all(
            (directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")
        ):
            return reachable_by_postgres(directory)
    return None


def reachable_by_postgres(bindir: Path) -> Path:
    """``bindir``, or a copy of its installation the ``postgres`` user can run.

    As root the servers run as ``postgres``; binaries installed in the checkout
    (``.venv/pg``) are out of its reach when a parent directory is private (a clone
    in ``mktemp -d``, mode 0700). Copy that installation once to the temp directory.
    """
    real = bindir.resolve()
    if os.geteuid() != 0 or all(os.stat(p).st_mode & 0o001 for p in real.parents):
        return bindir
    # The whole install directory: the binaries find their libraries beside it.
    root = bindir.parent.resolve()
    inside = real.relative_to(root)
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    dest = Path(tempfile.gettempdir()) / "safe-migrate-pg" / digest
    if not (dest / inside / "postgres").is_file():
        dest.parent.mkdir(mode=0o755, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f"{digest}.", dir=dest.parent))
        shutil.copytree(root, partial / "tree", symlinks=True)
        os.chmod(partial, 0o755)
        try:
            os.rename(partial / "tree", dest)
        except OSError:  # another session copied it first
            shutil.rmtree(partial / "tree")
        os.rmdir(partial)
    return dest / inside


def find_pgbouncer() -> str | None:
    """Return the pgbouncer executable, or None when not installed."""
    return shutil.which("pgbouncer") or shutil.which(
        "pgbouncer", path="/usr/sbin:/usr/local/sbin:/usr/local/bin"
    )


def find_openssl() -> str | None:
    """Return the openssl executable, or None when not installed."""
    return shutil.which("openssl")


def running_as_root() -> bool:
    """Whether the tests run as root (the servers then run as the postgres account)."""
    return os.geteuid() == 0


def server_user_kwargs() -> dict[str, t.Any]:
    """Popen arguments that drop root to the server account between fork and exec."""
    if not running_as_root():
        return {}
    return {"user": SERVER_ACCOUNT, "group": SERVER_ACCOUNT, "extra_groups": []}


def own_for_server(path: Path) -> None:
    """Hand ``path`` (recursively) to the server account when running as root."""
    if not running_as_root():
        return
    shutil.chown(path, SERVER_ACCOUNT, SERVER_ACCOUNT)
    for root, dirs, files in os.walk(path):
        shutil.chown(root, SERVER_ACCOUNT, SERVER_ACCOUNT)
        for name in dirs + files:
            shutil.chown(os.path.join(root, name), SERVER_ACCOUNT, SERVER_ACCOUNT)


def make_private_dir(prefix: str) -> Path:
    """Make a mode-0700 temporary directory owned by the server account."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o700)
    own_for_server(directory)
    return directory


def server_env() -> dict[str, str]:
    """The environment for a server process: no ``PG*`` variables, the C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def tail(path: Path, lines: int) -> str:
    """Return the last ``lines`` lines of the text file ``path`` (never raises)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def run_command(cmd: list[str], *, cwd: Path, as_server: bool = True) -> None:
    """Run ``cmd`` to completion (as the server account unless ``as_server`` is off).

    :raises ServiceError: with its output, when it exits non-zero.
    """
    result = subprocess.run(
        cmd,
        cwd=cwd,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **(server_user_kwargs() if as_server else {}),
    )
    if result.returncode != 0:
        raise ServiceError(
            f"{cmd[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )


def make_certificate(cert_file: Path, key_file: Path) -> None:
    """Write a self-signed P-256 certificate for ``localhost`` and its key.

    :raises ServiceError: when openssl is missing or fails.
    """
    openssl = find_openssl()
    if openssl is None:
        raise ServiceError("openssl not found")
    subject = ["-subj", "/CN=localhost", "-days", "2"]
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    files = ["-keyout", str(key_file), "-out", str(cert_file)]
    run_command(
        [openssl, "req", "-x509", *curve, *subject, *files],
        cwd=cert_file.parent,
        as_server=False,
    )
    key_file.chmod(0o600)


def connect_psycopg2(
    url: str | sa.URL, **overrides: t.Any
) -> psycopg2.extensions.connection:
    """Open a raw psycopg2 connection from a SQLAlchemy URL (query args are kwargs)."""
    conn: psycopg2.extensions.connection = psycopg2.connect(
        **libpq_kwargs(url, **overrides)
    )
    return conn


def libpq_kwargs(url: str | sa.URL, **overrides: t.Any) -> dict[str, t.Any]:
    """Return libpq connect keywords of a SQLAlchemy URL: its query args, then
    ``overrides``, win; unset ones are left out."""
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
    return {k: v for k, v in kwargs.items() if v is not None}


def make_url(
    port: int, dbname: str, *, driver: str, password: str, query: dict[str, str]
) -> str:
    """Return a SQLAlchemy URL (password shown) to ``dbname`` on 127.0.0.1:``port``."""
    url = sa.URL.create(
        driver,
        username=PG_USER,
        password=password,
        host=LOCALHOST,
        port=port,
        database=dbname,
        query=query,
    )
    return url.render_as_string(hide_password=False)


def reap(process: subprocess.Popen[t.Any]) -> None:
    """Kill ``process`` if it still runs, wait for it and close its pipes.

    A child a test leaves running is garbage-collected during some later test, where
    its ``ResourceWarning`` ("subprocess N is still running", unclosed pipes) becomes
    an error (``filterwarnings = error``) and fails that unrelated test.
    """
    if process.poll() is None:
        process.kill()
    with process:  # closes stdin/stdout/stderr, then waits
        pass
