"""The report in the formats CI systems read: SARIF 2.1.0 and GitHub annotations.

``check --format sarif`` is for GitHub code scanning (``upload-sarif``), and
``check --format github`` prints workflow commands that GitHub Actions shows as
annotations on the changed lines. Text and JSON are rendered by the CLI and
:mod:`.schema`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import typing as t
from pathlib import Path

from .findings import Finding
from .findings import LintReport
from .findings import Source
from .rules import RULES

__all__ = ["SARIF_SCHEMA_URI", "render_github", "render_sarif", "report_to_sarif"]

#: Where SARIF 2.1.0's JSON Schema is published (``$schema`` of the log).
SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"

_TOOL = "flask-safe-migrate"
_INFORMATION_URI = "https://pypi.org/project/flask-safe-migrate/"


def report_to_sarif(report: LintReport) -> dict[str, t.Any]:
    """Return *report* as a SARIF 2.1.0 log with one run.

    Each rule id that appears becomes a ``reportingDescriptor``; suppressed
    findings are results with an ``inSource`` suppression and its reason.
    """
    findings = [*report.findings, *report.suppressed]
    rule_ids = sorted({f.rule for f in findings})
    index = {rule: i for i, rule in enumerate(rule_ids)}
    results = [_result(f, index[f.rule]) for f in findings]
    driver: dict[str, t.Any] = {
        "name": _TOOL,
        "informationUri": _INFORMATION_URI,
        "rules": [_descriptor(rule, findings) for rule in rule_ids],
    }
    version = _version()
    if version:
        driver["version"] = version
    return {
        "$schema": SARIF_SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": driver},
                "results": results,
                "columnKind": "unicodeCodePoints",
            }
        ],
    }


def render_sarif(report: LintReport) -> str:
    """Return the SARIF log of *report* as indented JSON text."""
    return json.dumps(report_to_sarif(report), indent=2, sort_keys=True)


def render_github(report: LintReport) -> str:
    """Return one ``::error``/``::warning`` workflow command per active finding,
    and a ``::notice`` when squawk did not run."""
    lines = []
    for finding in report.findings:
        path, line = split_location(finding.location)
        properties = [f"title={_escape_property(finding.rule)}"]
        if path is not None:
            properties.insert(0, f"file={_escape_property(path)}")
            if line is not None:
                properties.insert(1, f"line={line}")
        lines.append(
            f"::{finding.severity.value} {','.join(properties)}::"
            f"{_escape_data(_text(finding))}"
        )
    if report.squawk_note:
        lines.append(f"::notice title=squawk::{_escape_data(report.squawk_note)}")
    return "\n".join(lines)


def split_location(location: str | None) -> tuple[str | None, int | None]:
    """Split ``path:line`` into its parts; ``(None, None)`` for ``<sql>`` or None."""
    if not location or location.startswith("<"):
        return None, None
    path, _, line = location.rpartition(":")
    if path and line.isdigit():
        return path, int(line)
    return location, None


def _text(finding: Finding) -> str:
    """The finding in one message: what, where in the step, and the fix."""
    parts = [finding.message]
    if finding.step_id is not None:
        where = f"step {finding.step_id} ({finding.phase})"
        if finding.line is not None:
            where += f", line {finding.line} of its SQL"
        parts.append(where)
    if finding.statement:
        parts.append(finding.statement)
    parts.append(f"fix: {finding.hint}")
    return "\n".join(parts)


def _result(finding: Finding, rule_index: int) -> dict[str, t.Any]:
    result: dict[str, t.Any] = {
        "ruleId": finding.rule,
        "ruleIndex": rule_index,
        "level": finding.severity.value,
        "message": {"text": _text(finding)},
    }
    path, line = split_location(finding.location)
    if path is not None:
        physical: dict[str, t.Any] = {"artifactLocation": _artifact(path)}
        if line is not None:
            physical["region"] = {"startLine": line}
        result["locations"] = [{"physicalLocation": physical}]
    if finding.step_id is not None:
        result["properties"] = {"stepId": finding.step_id, "phase": finding.phase}
    if finding.suppressed_reason is not None:
        result["suppressions"] = [
            {"kind": "inSource", "justification": finding.suppressed_reason}
        ]
    return result


def _artifact(path: str) -> dict[str, str]:
    """A path below the project as a relative URI, any other as a file URI."""
    if os.path.isabs(path):
        return {"uri": Path(path).as_uri()}
    return {"uri": path.replace("\\", "/"), "uriBaseId": "%SRCROOT%"}


def _descriptor(rule_id: str, findings: list[Finding]) -> dict[str, t.Any]:
    """The SARIF rule of *rule_id*: ours from the registry, squawk's by name."""
    ours = RULES.get(rule_id)
    if ours is not None:
        return {
            "id": rule_id,
            "shortDescription": {"text": ours.summary},
            "help": {"text": ours.hint},
            "defaultConfiguration": {"level": ours.severity.value},
        }
    sample = next(f for f in findings if f.rule == rule_id)
    descriptor: dict[str, t.Any] = {
        "id": rule_id,
        "shortDescription": {"text": f"squawk: {rule_id}"},
        "defaultConfiguration": {"level": sample.severity.value},
    }
    if sample.source is Source.SQUAWK:
        descriptor["helpUri"] = f"https://squawkhq.com/docs/{rule_id}"
    return descriptor


def _version() -> str | None:
    try:
        return importlib.metadata.version(_TOOL)
    except importlib.metadata.PackageNotFoundError:
        return None


def _escape_data(text: str) -> str:
    """Escape a workflow command's message, as GitHub's toolkit does."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    """Escape a workflow command's property value (``file=``, ``title=``)."""
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")
