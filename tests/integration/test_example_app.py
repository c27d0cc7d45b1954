"""The README's first command and a 4-worker gunicorn boot of the example app."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from example_app import migrations
from example_app import steps  # noqa: F401  # registers the steps on the shared migrate
from example_app.app import migrate
from flask_safe_migrate.core.steps import Phase

from .services import PG_PASSWORD
from .services import TestDatabase
from .services import free_port
from .services import wait_until

for _module in pkgutil.iter_modules(migrations.__path__):  # as init_app does
    importlib.import_module(f"{migrations.__name__}.{_module.name}")

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STEP_COUNT = len(migrate.registry)
#: What the boot run applies (SAFE_MIGRATE_ON_BOOT=schema): the schema phase.
SCHEMA_STEP_COUNT = len(migrate.registry.steps(Phase.SCHEMA))


def _env(database: TestDatabase) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFE_MIGRATE_")}
    env["DATABASE_URL"] = database.bouncer_url
    return env


def _flask(database: TestDatabase, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(BIN / "flask"),
        "--app",
        "example_app.app:create_app",
        "safe-migrate",
    ]
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        env=_env(database),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_first_command_applies_then_is_up_to_date(database: TestDatabase) -> None:
    """`flask safe-migrate` applies every step once; a second run is up to date.

    Once per driver: ``DATABASE_URL=postgresql+psycopg://...`` runs on psycopg 3.
    """
    first = _flask(database)
    assert first.returncode == 0, first.stderr
    assert f"{STEP_COUNT} step(s) applied" in first.stdout
    second = _flask(database)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    assert PG_PASSWORD not in first.stdout + first.stderr + second.stderr
    ledger = database.scalar("SELECT count(*) FROM safe_migrate_ledger")
    assert ledger == STEP_COUNT
    assert database.scalar("SELECT count(*) FROM leads") == 2
    # dedup kept one msg-1, the orphan is gone, the unique index exists
    assert database.scalar("SELECT count(*) FROM messages") == 2
    assert database.scalar(
        "SELECT indisvalid FROM pg_index "
        "WHERE indexrelid = to_regclass('messages_provider_msg_id_key')"
    )
    assert database.scalar("SELECT count(*) FROM leads WHERE order_index = id") == 2


def test_four_gunicorn_workers_boot_at_once(
    database: TestDatabase, tmp_path: Path
) -> None:
    """Four workers (no preload) boot together: all serve, each step applied once."""
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "--workers",
                "4",
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "info",
                "example_app.app:create_app()",
            ],
            cwd=ROOT,
            env=_env(database),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: log.read_text().count("Booting worker") >= 4, 60, message="boot"
        )
        wait_until(lambda: _health(port), 60, message="/health answers")
        for _ in range(40):  # spread over the workers: each one serves
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/leads") as reply:
                assert reply.status == 200
        text = log.read_text()
        assert "Worker failed to boot" not in text
        assert "Traceback" not in text, text
        assert server.poll() is None
        ledger = database.scalar("SELECT count(*) FROM safe_migrate_ledger")
        assert ledger == SCHEMA_STEP_COUNT
        assert database.scalar("SELECT count(*) FROM leads") == 2
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def test_two_runs_then_status_and_doctor_print_no_fail_and_no_headerless_column(
    database: TestDatabase,
) -> None:
    """The README's path: run twice, then status and doctor (through TLS PgBouncer):
    no negative number, every status column has a header, doctor prints no FAIL
    and exits 0."""
    runs = [_flask(database) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0]
    status = _flask(database, "status")
    assert status.returncode == 0, status.stderr
    header, rule, *rows = status.stdout.splitlines()[: STEP_COUNT + 2]
    starts = [m.start() for m in re.finditer(r"-+", rule)]
    assert [header[i : i + 1].strip() != "" for i in starts] == [True] * len(starts)
    assert header.split()[-1] == "progress"
    assert all(len(row) <= len(rule) for row in rows)
    doctor = _flask(database, "doctor")
    assert doctor.returncode == 0, doctor.stdout
    for result in (*runs, status, doctor):
        negative = re.search(r"(?<![\w.])-\d", result.stdout + result.stderr)
        assert negative is None, result.stdout + result.stderr
    assert "FAIL" not in doctor.stdout
    assert "ok    tls         TLS in use" in doctor.stdout
    assert "ok    pooler      transaction pooling" in doctor.stdout
