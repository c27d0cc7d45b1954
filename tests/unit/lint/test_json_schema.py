"""check --json follows its documented JSON Schema (checked by a tiny validator)."""

from __future__ import annotations

import json
import typing as t

import pytest

from flask_safe_migrate.core.lint import REPORT_SCHEMA
from flask_safe_migrate.core.lint import report_to_dict
from flask_safe_migrate.core.lint.findings import Finding
from flask_safe_migrate.core.lint.findings import LintReport
from flask_safe_migrate.core.lint.findings import Severity
from flask_safe_migrate.core.lint.findings import Source

from .score import corpus_report

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def validate(value: t.Any, schema: dict[str, t.Any], path: str = "$") -> list[str]:
    """Return the errors of *value* against the subset of JSON Schema we use."""
    errors: list[str] = []
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']!r}")
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(
            isinstance(value, _TYPES[n])
            and not (n == "integer" and isinstance(value, bool))
            for n in names
        )
        if not ok:
            return [*errors, f"{path}: {value!r} is not {names}"]
    if isinstance(value, int) and "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {value} < {schema['minimum']}")
    if isinstance(value, str) and "pattern" in schema:
        import re

        if not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing {key!r}")
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                errors += validate(item, properties[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected {key!r}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{index}]")
    return errors


def test_validator_catches_mistakes() -> None:
    """The validator itself rejects a wrong shape (so a pass means something)."""
    data = report_to_dict(LintReport())
    data["ok"] = "yes"
    data["extra"] = 1
    del data["counts"]
    assert len(validate(data, REPORT_SCHEMA)) == 3


def test_corpus_report_matches_schema() -> None:
    """The corpus report (findings and suppressions of every kind) validates."""
    data = json.loads(json.dumps(report_to_dict(corpus_report(squawk=True))))
    assert validate(data, REPORT_SCHEMA) == []
    assert data["findings"]
    assert data["suppressed"]
    assert {f["source"] for f in data["findings"]} >= {"safe-migrate"}


@pytest.mark.parametrize("source", list(Source))
def test_every_source_and_severity(source: Source) -> None:
    """Findings of each source and severity, with or without a step, validate."""
    report = LintReport(
        findings=[
            Finding("x-rule", Severity.ERROR, "m", "h", source),
            Finding(
                "y-rule", Severity.WARNING, "m", "h", source, "0001", "index", "f:1", 2
            ),
        ],
        files_checked=["steps.py"],
        squawk_note="squawk is not installed",
    )
    assert validate(report_to_dict(report), REPORT_SCHEMA) == []
