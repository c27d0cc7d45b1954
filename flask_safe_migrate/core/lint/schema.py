"""The JSON shape of ``check --json``: a JSON Schema, and the report rendered to it."""

from __future__ import annotations

import typing as t

from .findings import Finding
from .findings import LintReport

__all__ = ["REPORT_SCHEMA", "SCHEMA_VERSION", "finding_to_dict", "report_to_dict"]

#: Bumped on any incompatible change of the shape below.
SCHEMA_VERSION = 1

_NULLABLE_STRING = {"type": ["string", "null"]}

FINDING_SCHEMA: dict[str, t.Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "rule",
        "severity",
        "source",
        "step_id",
        "phase",
        "location",
        "line",
        "statement",
        "message",
        "hint",
        "suppressed_reason",
    ],
    "properties": {
        "rule": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
        "severity": {"enum": ["error", "warning"]},
        "source": {"enum": ["safe-migrate", "squawk", "verifier"]},
        "step_id": _NULLABLE_STRING,
        "phase": {"enum": ["schema", "index", "backfill", None]},
        "location": _NULLABLE_STRING,
        "line": {"type": ["integer", "null"], "minimum": 1},
        "statement": _NULLABLE_STRING,
        "message": {"type": "string"},
        "hint": {"type": "string"},
        "suppressed_reason": _NULLABLE_STRING,
    },
}

#: JSON Schema (draft 2020-12) of ``flask safe-migrate check --json``.
REPORT_SCHEMA: dict[str, t.Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "flask safe-migrate check report",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "version",
        "ok",
        "counts",
        "steps_checked",
        "files_checked",
        "squawk",
        "findings",
        "suppressed",
    ],
    "properties": {
        "version": {"const": SCHEMA_VERSION},
        "ok": {"type": "boolean"},
        "counts": {
            "type": "object",
            "additionalProperties": False,
            "required": ["error", "warning", "suppressed"],
            "properties": {
                "error": {"type": "integer", "minimum": 0},
                "warning": {"type": "integer", "minimum": 0},
                "suppressed": {"type": "integer", "minimum": 0},
            },
        },
        "steps_checked": {"type": "integer", "minimum": 0},
        "files_checked": {"type": "array", "items": {"type": "string"}},
        "squawk": {
            "type": "object",
            "additionalProperties": False,
            "required": ["ran", "version", "note"],
            "properties": {
                "ran": {"type": "boolean"},
                "version": _NULLABLE_STRING,
                "note": _NULLABLE_STRING,
            },
        },
        "findings": {"type": "array", "items": FINDING_SCHEMA},
        "suppressed": {"type": "array", "items": FINDING_SCHEMA},
    },
}


def finding_to_dict(finding: Finding) -> dict[str, t.Any]:
    """Return *finding* in the shape of ``REPORT_SCHEMA``'s findings."""
    return {
        "rule": finding.rule,
        "severity": finding.severity.value,
        "source": finding.source.value,
        "step_id": finding.step_id,
        "phase": finding.phase,
        "location": finding.location,
        "line": finding.line,
        "statement": finding.statement,
        "message": finding.message,
        "hint": finding.hint,
        "suppressed_reason": finding.suppressed_reason,
    }


def report_to_dict(report: LintReport) -> dict[str, t.Any]:
    """Return *report* in the shape of :data:`REPORT_SCHEMA`."""
    return {
        "version": SCHEMA_VERSION,
        "ok": report.ok,
        "counts": {
            "error": len(report.errors),
            "warning": len(report.warnings),
            "suppressed": len(report.suppressed),
        },
        "steps_checked": report.steps_checked,
        "files_checked": list(report.files_checked),
        "squawk": {
            "ran": report.squawk_ran,
            "version": report.squawk_version,
            "note": report.squawk_note,
        },
        "findings": [finding_to_dict(f) for f in report.findings],
        "suppressed": [finding_to_dict(f) for f in report.suppressed],
    }
