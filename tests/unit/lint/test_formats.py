"""check --format sarif / github: SARIF 2.1.0 valid by its schema, annotations."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from flask import Flask

from flask_safe_migrate import SafeMigrate
from flask_safe_migrate.core.lint import lint_steps
from flask_safe_migrate.core.lint import render_github
from flask_safe_migrate.core.lint import render_sarif
from flask_safe_migrate.core.lint import report_to_sarif
from flask_safe_migrate.core.lint.findings import Finding
from flask_safe_migrate.core.lint.findings import LintReport
from flask_safe_migrate.core.lint.findings import Severity

from .conftest import make_step
from .score import corpus_report

#: SARIF 2.1.0's JSON Schema (the OASIS standard's rtm.5), vendored from the
#: MIT-licensed npm package @microsoft/jest-sarif 1.0.0-beta.0 (lib/schemas/).
SARIF_SCHEMA = json.loads(
    (Path(__file__).parent / "sarif-2.1.0-rtm.5.json").read_text(encoding="utf-8")
)


def sarif_errors(log: object) -> list[str]:
    """The schema violations of a SARIF log."""
    validator = jsonschema.Draft4Validator(SARIF_SCHEMA)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(log)]


def test_sarif_of_the_corpus_is_valid() -> None:
    """The corpus report, with squawk's findings when installed, is valid SARIF."""
    report = corpus_report(squawk=True)
    log = json.loads(render_sarif(report))
    assert sarif_errors(log) == []
    (run,) = log["runs"]
    assert len(run["results"]) == len(report.findings) + len(report.suppressed)
    ids = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    assert ids == sorted({f.rule for f in report.findings + report.suppressed})
    for result in run["results"]:
        assert ids[result["ruleIndex"]] == result["ruleId"]


def test_sarif_result_points_at_the_file_and_line() -> None:
    """A finding becomes a result at its file:line, with level and suppression."""
    finding = Finding(
        rule="require-concurrent-index",
        severity=Severity.ERROR,
        message="CREATE INDEX without CONCURRENTLY",
        hint="use migrate.index",
        step_id="0003_idx",
        phase="schema",
        location="app/steps.py:31",
        line=2,
    )
    report = LintReport(findings=[finding], suppressed=[finding.suppressed("tiny")])
    log = report_to_sarif(report)
    assert sarif_errors(log) == []
    active, suppressed = log["runs"][0]["results"]
    assert active["level"] == "error"
    location = active["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "app/steps.py"
    assert location["region"] == {"startLine": 31}
    assert "line 2 of its SQL" in active["message"]["text"]
    assert "suppressions" not in active
    assert suppressed["suppressions"] == [{"kind": "inSource", "justification": "tiny"}]


def test_sarif_absolute_path_is_a_file_uri() -> None:
    """A file outside the working directory is located by a file:// URI."""
    finding = Finding(
        rule="bare-except-in-step",
        severity=Severity.ERROR,
        message="swallowed",
        hint="re-raise",
        location="/srv/app/steps.py:7",
    )
    log = report_to_sarif(LintReport(findings=[finding]))
    assert sarif_errors(log) == []
    (result,) = log["runs"][0]["results"]
    artifact = result["locations"][0]["physicalLocation"]["artifactLocation"]
    assert artifact == {"uri": "file:///srv/app/steps.py"}


def test_sarif_without_findings_is_valid() -> None:
    """An empty report is a valid log with no results."""
    log = report_to_sarif(LintReport())
    assert sarif_errors(log) == []
    assert log["runs"][0]["results"] == []


def test_github_annotations() -> None:
    """Each finding is one workflow command, with file, line and escaped text."""
    report = lint_steps(
        [make_step("DELETE FROM a;\nVACUUM a", id="0001_x")], squawk=False
    )
    lines = render_github(report).splitlines()
    assert len(lines) == 2
    first = lines[0]
    assert first.startswith("::error file=steps.py%3A0001_x,title=dml-needs-category::")
    assert "%0Afix: " in first


def test_github_annotation_file_and_line() -> None:
    """A path:line location becomes file= and line=; % and newlines are escaped."""
    finding = Finding(
        rule="bare-except-in-step",
        severity=Severity.WARNING,
        message="100% swallowed,\nreally",
        hint="re-raise",
        location="app/steps.py:7",
    )
    (line,) = render_github(LintReport(findings=[finding])).splitlines()
    assert line == (
        "::warning file=app/steps.py,line=7,title=bare-except-in-step::"
        "100%25 swallowed,%0Areally%0Afix: re-raise"
    )


def test_github_notice_when_squawk_did_not_run() -> None:
    """Without squawk, the annotations say so in one notice."""
    report = LintReport(squawk_note="squawk is not installed; ran our rules only")
    assert render_github(report) == (
        "::notice title=squawk::squawk is not installed; ran our rules only"
    )


def test_cli_format_sarif_and_github(app: Flask) -> None:
    """check --format sarif prints a valid log; --format github annotations."""
    migrate = SafeMigrate()
    migrate.sql("0001_a", "CREATE TABLE a (id int)")
    migrate.sql("0002_dml", "DELETE FROM a")
    migrate.init_app(app)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["safe-migrate", "check", "--format", "sarif"])
    assert result.exit_code == 3, result.output
    log = json.loads(result.stdout)
    assert sarif_errors(log) == []
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["dml-needs-category"]
    result = runner.invoke(
        args=["safe-migrate", "check", "--no-squawk", "--format", "github"]
    )
    assert result.exit_code == 3
    assert result.stdout.startswith("::error file=")
    assert "title=dml-needs-category::" in result.stdout
