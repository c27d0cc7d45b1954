"""The migration-code verifier on fixture modules (parsed, never imported)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flask_safe_migrate.core.lint.verify import expand_paths
from flask_safe_migrate.core.lint.verify import verify_files

FIXTURES = Path(__file__).parent / "fixtures"

HAZARDS = {
    "app_session.py": "app-session-in-migration",
    "transaction_around_retry.py": "transaction-around-retry",
    "connection_reuse.py": "connection-across-retries",
    "bare_except.py": "bare-except-in-step",
    "app_session_deeper.py": "app-session-in-migration",
    "transaction_around_retry_deeper.py": "transaction-around-retry",
    "bare_except_deeper.py": "bare-except-in-step",
}


def marked_lines(path: Path) -> list[int]:
    """The lines of *path* marked ``# HAZARD``."""
    lines = path.read_text().splitlines()
    return [n for n, line in enumerate(lines, start=1) if "# HAZARD" in line]


@pytest.mark.parametrize(("name", "rule"), sorted(HAZARDS.items()))
def test_finds_each_hazard(name: str, rule: str) -> None:
    """Each fixture's marked lines, and only those, are reported under its rule."""
    path = FIXTURES / name
    active, suppressed = verify_files([str(path)])
    assert {f.rule for f in active} == {rule}
    assert sorted(int(f.location.rsplit(":", 1)[1]) for f in active if f.location) == (
        marked_lines(path)
    )
    assert suppressed == []
    for finding in active:
        assert finding.hint
        assert finding.severity.value == "error"


def test_clean_module_passes() -> None:
    """Correct migration code, request code and data loops report nothing."""
    active, suppressed = verify_files([str(FIXTURES / "clean.py")])
    assert active == []
    assert [(f.rule, f.suppressed_reason) for f in suppressed] == [
        ("connection-across-retries", "read-only probe, no DDL")
    ]


@pytest.mark.parametrize("name", ["clean_deeper.py", "helpers_db.py"])
def test_deeper_near_misses_pass(name: str) -> None:
    """Helpers without the app's session, closed connections, re-raising handlers
    and the helper module itself report nothing."""
    active, suppressed = verify_files([str(FIXTURES / name)])
    assert active == []
    assert suppressed == []


def test_findings_name_the_call_chain() -> None:
    """A hazard one call away names the helper, its file and line, and the use."""
    active, _ = verify_files([str(FIXTURES / "app_session_deeper.py")])
    imported = next(f.message for f in active if "module_attribute()" in f.message)
    assert "purge_sessions() (" in imported
    assert "helpers_db.py:11)" in imported
    assert imported.startswith("db.session used by ")
    assert "in migration function module_attribute()" in imported
    active, _ = verify_files([str(FIXTURES / "transaction_around_retry_deeper.py")])
    wrapper = next(f.message for f in active if "_apply(...)" in f.message)
    assert "which calls execute_with_retry(...) via _apply() (" in wrapper
    held = next(f.message for f in active if "conn = engine.begin()" in f.message)
    assert "without a with block" in held


def test_example_app_is_clean() -> None:
    """The project's own example app has no verifier finding, in any module."""
    root = Path(__file__).parents[3] / "example_app"
    files = expand_paths([root])
    assert any(f.endswith("steps.py") for f in files)
    active, _ = verify_files(files)
    assert active == []


def test_disabled_rule_is_skipped() -> None:
    """A rule id in the disabled list reports nothing."""
    path = str(FIXTURES / "bare_except.py")
    active, _ = verify_files([path], disabled=["bare-except-in-step"])
    assert active == []


def test_suppression_needs_reason(tmp_path: Path) -> None:
    """A Python suppression without a reason is an error and suppresses nothing."""
    path = tmp_path / "steps.py"
    path.write_text(
        "@migrate.step('0001')\n"
        "def s(m):\n"
        "    try:\n"
        "        m.execute('SELECT 1')\n"
        "    # safe-migrate: ignore bare-except-in-step\n"
        "    except Exception:\n"
        "        pass\n"
    )
    active, suppressed = verify_files([str(path)])
    assert sorted(f.rule for f in active) == [
        "bare-except-in-step",
        "invalid-suppression",
    ]
    assert suppressed == []


def test_unreadable_file(tmp_path: Path) -> None:
    """A file that does not parse is reported, not raised."""
    path = tmp_path / "broken.py"
    path.write_text("def (:\n")
    active, _ = verify_files([str(path)])
    assert [f.rule for f in active] == ["unreadable-file"]


def test_expand_paths_skips_virtualenvs(tmp_path: Path) -> None:
    """Directories are searched deeply, but not inside .venv or __pycache__."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "steps.py").write_text("")
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "x.py").write_text("")
    assert [Path(f).name for f in expand_paths([tmp_path])] == ["steps.py"]
