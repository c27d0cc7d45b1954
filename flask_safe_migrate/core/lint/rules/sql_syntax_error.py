"""Rule sql-syntax-error: reported by the linter itself."""

from __future__ import annotations

from ..findings import Severity
from ._rule import Scope

RULE = "sql-syntax-error"
SEVERITY = Severity.ERROR
SCOPE = Scope.ENGINE
SUMMARY = "SQL that PostgreSQL's parser rejects"
HINT = "fix the syntax; the step would fail when it runs"
