"""An embedded PostgreSQL (the ``pgserver`` package) for running the example locally."""

from __future__ import annotations

import warnings
from pathlib import Path

#: Kept between runs, so a second run sees the migrated database.
DATA_DIR = Path(__file__).resolve().parent / ".pgdata"


def embedded_database_url(data_dir: Path = DATA_DIR) -> str:
    """Start (or reuse) the embedded server in ``data_dir`` and return its URL.

    The server stops when the last process using it exits; the data stays. As root,
    pgserver runs PostgreSQL as its own ``pgserver`` system user (PostgreSQL
    refuses to run as root), creating that user if needed.

    :raises RuntimeError: the ``example`` extra (``pgserver``) is not installed.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI).
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            import pgserver
    except ImportError as exc:
        raise RuntimeError(
            "set DATABASE_URL, or install the embedded PostgreSQL with "
            "pip install -e '.[example]'"
        ) from exc
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        server = pgserver.get_server(data_dir)  # type: ignore[attr-defined]  # untyped
    uri: str = server.get_uri()
    return uri
