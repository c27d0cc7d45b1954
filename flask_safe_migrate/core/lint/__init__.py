"""Lint the SQL of steps and verify the migration code (``flask safe-migrate check``).

Our rules use PostgreSQL's own parser (pglast, in :mod:`..sql` only); squawk's
DDL-safety rules run as a subprocess (:mod:`.squawk`) when it is installed; the
verifier (:mod:`.verify`) reads the Python modules that register steps; the report
is rendered for CI by :mod:`.formats` (SARIF, GitHub annotations).
"""

from __future__ import annotations

import typing as t

from ..steps import Step
from .collect import display_path
from .findings import Finding
from .findings import LintReport
from .findings import Severity
from .findings import Source
from .formats import render_github
from .formats import render_sarif
from .formats import report_to_sarif
from .linter import lint_sql
from .linter import lint_steps
from .linter import run_time_findings
from .rules import RULES
from .rules import Rule
from .schema import REPORT_SCHEMA
from .schema import report_to_dict
from .verify import expand_paths
from .verify import step_files
from .verify import verify_files

__all__ = [
    "REPORT_SCHEMA",
    "RULES",
    "Finding",
    "LintReport",
    "Rule",
    "Severity",
    "Source",
    "check_steps",
    "lint_sql",
    "lint_steps",
    "render_github",
    "render_sarif",
    "report_to_dict",
    "report_to_sarif",
    "run_time_findings",
]


def check_steps(
    steps: t.Sequence[Step],
    *,
    paths: t.Iterable[str] = (),
    disabled: t.Iterable[str] = (),
    squawk: bool = True,
) -> LintReport:
    """Lint every step's SQL and verify the modules that register them (and *paths*).

    :param paths: more Python files or directories for the verifier.
    :param disabled: rule ids (ours or squawk's) to skip.
    :param squawk: run squawk's rules too, when it is installed.
    """
    off = tuple(disabled)
    report = lint_steps(steps, disabled=off, squawk=squawk)
    files = list(dict.fromkeys([*step_files(steps), *expand_paths(paths)]))
    active, suppressed = verify_files(files, disabled=off)
    report.findings += active
    report.suppressed += suppressed
    report.files_checked = [display_path(f) for f in files]
    return report
