"""Run squawk (``squawk --reporter json``) on collected SQL: its DDL-safety rules.

squawk is a separate binary (PyPI ``squawk-cli``). This is the only module that
runs it; without it, :mod:`.linter` runs our own rules alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import typing as t
from dataclasses import dataclass
from pathlib import Path

from .findings import Severity

__all__ = [
    "EXCLUDED_RULES",
    "KNOWN_RULES",
    "SQUAWK_RULES",
    "SquawkError",
    "SquawkViolation",
    "find_squawk",
    "run_squawk",
    "severity_of",
    "squawk_version",
]

#: squawk rules the runner satisfies itself: it sets ``lock_timeout`` (and
#: ``statement_timeout`` when configured) with SET LOCAL, wraps each schema step
#: in one transaction, and applies each step exactly once (so re-runnability,
#: IF NOT EXISTS, is not needed).
RUNNER_SATISFIED = (
    "require-lock-timeout",
    "require-statement-timeout",
    "require-timeout-settings",
    "prefer-robust-stmts",
    "ban-uncommitted-transaction",
)
#: squawk rules one of ours replaces, phase-aware and available at run time.
SUPERSEDED = {
    "transaction-nesting": "transaction-control",
    "ban-concurrent-index-creation-in-transaction": (
        "concurrent-index-outside-index-phase"
    ),
    "require-concurrent-index-creation": "require-concurrent-index",
    "prefer-repack": "blocking-table-rewrite",
}
#: squawk's schema-design preferences (column types, enum order): not about
#: migrating safely, and they would flag most existing schemas.
STYLE_PREFERENCES = (
    "ban-char-field",
    "prefer-big-int",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "prefer-timestamp-tz",
    "prefer-timestamptz",
    "require-enum-value-ordering",
)
EXCLUDED_RULES = (*RUNNER_SATISFIED, *SUPERSEDED, *STYLE_PREFERENCES)

#: Rules about a table's definition, not about locking it: they still apply to
#: a table created in the same step.
STYLE_RULES = frozenset({*STYLE_PREFERENCES, "identifier-too-long", "unused-ignore"})

#: squawk rules whose findings are errors here: each blocks reads or writes of a
#: live table for a scan or a rewrite, or fails outright on a non-empty table.
_ERRORS = frozenset(
    {
        "adding-field-with-default",
        "adding-foreign-key-constraint",
        "adding-not-nullable-field",
        "adding-required-field",
        "adding-serial-primary-key-field",
        "ban-alter-domain-with-add-constraint",
        "ban-drop-database",
        "ban-truncate-cascade",
        "changing-column-type",
        "constraint-missing-not-valid",
        "disallowed-unique-constraint",
        "require-concurrent-reindex",
    }
)

#: Every rule name squawk 2.70 accepts (``--exclude`` validates them; its default
#: and opt-in rules), so a suppression may name any rule squawk can print. A name
#: squawk prints that is not here (a newer squawk) is accepted too.
SQUAWK_RULES = frozenset(
    {
        "adding-field-with-default",
        "adding-foreign-key-constraint",
        "adding-not-nullable-field",
        "adding-required-field",
        "adding-serial-primary-key-field",
        "ban-add-column",
        "ban-add-composite-attribute",
        "ban-add-enum-value",
        "ban-alter-database-options",
        "ban-alter-domain-with-add-constraint",
        "ban-alter-extension",
        "ban-alter-function-options",
        "ban-alter-generated-expression",
        "ban-alter-identity",
        "ban-alter-policy-condition",
        "ban-alter-policy-roles",
        "ban-alter-role-options",
        "ban-alter-row-level-security",
        "ban-alter-sequence-values",
        "ban-alter-system-options",
        "ban-alter-view-options",
        "ban-char-field",
        "ban-concurrent-index-creation-in-transaction",
        "ban-create-domain-with-constraint",
        "ban-create-policy",
        "ban-detach-inheritance",
        "ban-disable-trigger",
        "ban-drop-column",
        "ban-drop-constraint",
        "ban-drop-database",
        "ban-drop-default",
        "ban-drop-domain",
        "ban-drop-extension",
        "ban-drop-function",
        "ban-drop-generated-expression",
        "ban-drop-index",
        "ban-drop-not-null",
        "ban-drop-policy",
        "ban-drop-schema",
        "ban-drop-sequence",
        "ban-drop-table",
        "ban-drop-trigger",
        "ban-drop-type",
        "ban-drop-view",
        "ban-duplicate-column-assignments",
        "ban-new-write-restriction",
        "ban-replace-view-function",
        "ban-replica-identity",
        "ban-revoke",
        "ban-set-default",
        "ban-set-schema",
        "ban-truncate-cascade",
        "ban-uncommitted-transaction",
        "changing-column-type",
        "constraint-missing-not-valid",
        "disallowed-unique-constraint",
        "identifier-too-long",
        "prefer-bigint-over-int",
        "prefer-bigint-over-smallint",
        "prefer-identity",
        "prefer-repack",
        "prefer-robust-stmts",
        "prefer-text-field",
        "prefer-timestamp-tz",
        "renaming-column",
        "renaming-object",
        "renaming-table",
        "require-concurrent-index-creation",
        "require-concurrent-index-deletion",
        "require-concurrent-partition-detach",
        "require-concurrent-reindex",
        "require-enum-value-ordering",
        "require-lock-timeout",
        "require-statement-timeout",
        "require-table-schema",
        "require-timeout-settings",
        "transaction-nesting",
    }
)

#: Rule names valid in a suppression: squawk's, its older aliases, and the names
#: it prints without accepting them in ``--exclude``.
KNOWN_RULES = frozenset(
    {*SQUAWK_RULES, *EXCLUDED_RULES, *STYLE_RULES, "syntax-error", "unused-ignore"}
)

_BINARY = "squawk.exe" if os.name == "nt" else "squawk"
_TIMEOUT_SECONDS = 120.0


class SquawkError(RuntimeError):
    """squawk ran but failed (not a finding: a crash, a bad option, bad JSON)."""


@dataclass(frozen=True)
class SquawkViolation:
    """One finding of squawk, in the file it was given."""

    file: str
    #: 1-based line and 0-based column in that file.
    line: int
    column: int
    rule: str
    message: str
    help: str | None


def severity_of(rule: str) -> Severity:
    """Return our severity for squawk rule *rule* (errors: lock/rewrite hazards)."""
    return Severity.ERROR if rule in _ERRORS else Severity.WARNING


def find_squawk() -> str | None:
    """Return the squawk binary next to the interpreter, or on PATH, or None."""
    beside = Path(sys.executable).parent / _BINARY
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("squawk")


def squawk_version(binary: str) -> str | None:
    """Return squawk's version (``"2.70.0"``), or None if it does not say."""
    try:
        result = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = result.stdout.split()
    return words[-1] if result.returncode == 0 and words else None


def run_squawk(
    binary: str,
    files: t.Mapping[str, str],
    *,
    exclude: t.Iterable[str] = EXCLUDED_RULES,
    assume_in_transaction: bool = False,
) -> list[SquawkViolation]:
    """Lint the SQL texts *files* (name -> SQL) with one squawk process.

    Rules in *exclude* are turned off with ``--exclude``; a name this squawk
    version does not know is dropped from the list and the run repeated. With
    *assume_in_transaction*, squawk knows each file runs in one transaction (as a
    schema step does), so it sees e.g. NOT VALID and VALIDATE in the same one.

    :raises SquawkError: squawk failed for another reason.
    """
    if not files:
        return []
    excluded = list(dict.fromkeys(exclude))
    with tempfile.TemporaryDirectory(prefix="safe-migrate-squawk-") as tmp:
        paths = {}
        for name, sql in files.items():
            path = Path(tmp) / f"{name}.sql"
            path.write_text(sql, encoding="utf-8")
            paths[str(path)] = name
        while True:
            command = [binary, "--reporter", "json"]
            if excluded:
                command.append("--exclude=" + ",".join(excluded))
            if assume_in_transaction:
                command.append("--assume-in-transaction")
            command += list(paths)
            try:
                result = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    timeout=_TIMEOUT_SECONDS,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise SquawkError(f"squawk did not run: {exc}") from exc
            unknown = re.search(r"invalid rule name ([\w-]+)", result.stderr)
            if result.returncode == 2 and unknown and unknown.group(1) in excluded:
                excluded.remove(unknown.group(1))
                continue
            break
    if result.returncode not in (0, 1):
        detail = " ".join(result.stderr.split())[:300]
        raise SquawkError(f"squawk exited with {result.returncode}: {detail}")
    return [_violation(item, paths) for item in _load(result.stdout)]


def _load(stdout: str) -> list[dict[str, t.Any]]:
    text = stdout.strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SquawkError(f"squawk printed no JSON: {text[:200]!r}") from exc
    if not isinstance(data, list):
        raise SquawkError("squawk's JSON is not a list of violations")
    return [item for item in data if isinstance(item, dict)]


def _violation(item: dict[str, t.Any], paths: dict[str, str]) -> SquawkViolation:
    file = str(item.get("file", ""))
    name = paths.get(file) or paths.get(os.path.abspath(file)) or Path(file).stem
    return SquawkViolation(
        file=name,
        line=int(item.get("line") or 0) + 1,
        column=int(item.get("column") or 0),
        rule=str(item.get("rule_name", "")),
        message=str(item.get("message", "")),
        help=item.get("help") or None,
    )
