"""The pre-commit hook (.pre-commit-hooks.yaml) runs check in a project's repository.

``pre-commit try-repo`` installs this checkout as the hook repository into a fresh
environment (as a user's ``pre-commit`` would from a tag) and runs the hook in a
temporary git repository holding a small Flask app. No database is needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
HOOK = "flask-safe-migrate-check"

APP = """\
from flask import Flask

from flask_safe_migrate import SafeMigrate

migrate = SafeMigrate()
migrate.sql("0001_accounts", "CREATE TABLE accounts (id bigint PRIMARY KEY)")


def create_app():
    app = Flask(__name__)
    app.config.update(
        SAFE_MIGRATE_DATABASE_URI="postgresql://app@localhost/app",
        SAFE_MIGRATE_ON_BOOT="off",
    )
    migrate.init_app(app)
    return app
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )


def _try_repo(repo: Path, home: Path) -> subprocess.CompletedProcess[str]:
    pre_commit = Path(sys.executable).parent / "pre-commit"
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}
    return subprocess.run(
        [str(pre_commit), "try-repo", str(ROOT), HOOK, "--all-files", "--verbose"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Give a git repository with a clean Flask app (app.py) staged."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "project"
    repo.mkdir()
    (repo / "app.py").write_text(APP)
    _git(repo, "init", "-q")
    _git(repo, "add", "app.py")
    return repo


def test_hook_passes_then_blocks_a_hazard(project: Path, tmp_path: Path) -> None:
    """The hook passes on a clean app and fails, naming the rule, on a hazard."""
    home = tmp_path / "pre-commit-home"
    clean = _try_repo(project, home)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "1 steps checked" in clean.stdout
    with (project / "app.py").open("a") as handle:
        handle.write('\nmigrate.sql("0002_purge", "DELETE FROM accounts")\n')
    _git(project, "add", "app.py")
    dirty = _try_repo(project, home)
    assert dirty.returncode == 1, dirty.stdout + dirty.stderr
    assert "dml-needs-category" in dirty.stdout
    assert "0002_purge" in dirty.stdout
