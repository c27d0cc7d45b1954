"""The migration-code verifier: an AST pass over the modules that register steps."""

from __future__ import annotations

import os
import typing as t
from pathlib import Path

from ..steps import Step
from ._code import load_module
from .collect import display_path
from .findings import Finding
from .rules import RULES
from .rules import Scope
from .rules import rules_of
from .squawk import KNOWN_RULES
from .suppress import Suppression
from .suppress import python_suppressions

__all__ = ["step_files", "verify_files"]

#: Directories never searched for Python files.
_SKIP_DIRS = {".git", ".hg", ".tox", ".venv", "venv", "__pycache__", "node_modules"}


def step_files(steps: t.Iterable[Step]) -> list[str]:
    """Return the Python files that register *steps* (absolute paths, in order)."""
    files: dict[str, None] = {}
    for step in steps:
        code = getattr(step.fn, "__code__", None)
        path = code.co_filename if code is not None else step.location
        path = os.path.abspath(path if code is not None else path.rsplit(":", 1)[0])
        if path.endswith(".py") and os.path.isfile(path):
            files[path] = None
    return list(files)


def expand_paths(paths: t.Iterable[str | os.PathLike[str]]) -> list[str]:
    """Return the ``.py`` files of *paths* (files, or directories searched deeply)."""
    files: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for found in sorted(path.rglob("*.py")):
                parts = found.relative_to(path).parts[:-1]
                if not any(p in _SKIP_DIRS or p.startswith(".") for p in parts):
                    files.append(str(found.resolve()))
        else:
            files.append(str(path.resolve()))
    return list(dict.fromkeys(files))


def verify_files(
    files: t.Iterable[str], *, disabled: t.Iterable[str] = ()
) -> tuple[list[Finding], list[Finding]]:
    """Verify the migration code of *files*.

    :returns: the active findings and the suppressed ones.
    """
    off = frozenset(disabled)
    rules = rules_of(Scope.CODE, off)
    active: list[Finding] = []
    suppressed: list[Finding] = []
    for path in files:
        shown = display_path(path)
        try:
            source = Path(path).read_text(encoding="utf-8")
            module = load_module(shown, source)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as exc:
            if "unreadable-file" not in off:
                active.append(_finding("unreadable-file", f"{shown}:1", str(exc)))
            continue
        supps = python_suppressions(source)
        used: set[int] = set()
        for rule in rules:
            assert rule.check is not None
            seen: set[int] = set()
            for line, message in sorted(rule.check(module)):
                if line in seen:
                    continue
                seen.add(line)
                finding = _finding(rule.id, f"{shown}:{line}", message)
                match = _matching(supps, rule.id, line)
                if match is None:
                    active.append(finding)
                else:
                    used.add(id(match))
                    suppressed.append(finding.suppressed(match.reason))
        active += _suppression_problems(shown, supps, used, off)
    return active, suppressed


def _matching(supps: list[Suppression], rule: str, line: int) -> Suppression | None:
    for supp in supps:
        if rule in supp.rules and supp.reason and supp.covers(line, line):
            return supp
    return None


def _suppression_problems(
    shown: str, supps: list[Suppression], used: set[int], off: frozenset[str]
) -> list[Finding]:
    problems = []
    for supp in supps:
        unknown = [r for r in supp.rules if r not in RULES and r not in KNOWN_RULES]
        if not supp.rules or unknown:
            message = (
                f"unknown rule {', '.join(unknown)}"
                if unknown
                else "the suppression names no rule"
            )
            problems.append(
                _finding("invalid-suppression", f"{shown}:{supp.line}", message)
            )
        elif not supp.reason:
            problems.append(
                _finding(
                    "invalid-suppression",
                    f"{shown}:{supp.line}",
                    f"the suppression of {', '.join(supp.rules)} gives no reason",
                )
            )
        elif (
            id(supp) not in used
            and all(RULES[r].scope is Scope.CODE for r in supp.rules if r in RULES)
            and all(r in RULES for r in supp.rules)
        ):
            problems.append(
                _finding(
                    "unused-suppression",
                    f"{shown}:{supp.line}",
                    f"nothing to suppress for {', '.join(supp.rules)} here",
                )
            )
    return [p for p in problems if p.rule not in off]


def _finding(rule_id: str, location: str, message: str) -> Finding:
    rule = RULES[rule_id]
    return Finding(
        rule=rule.id,
        severity=rule.severity,
        message=message,
        hint=rule.hint,
        source=rule.source,
        location=location,
    )
