"""Rule unused-suppression: reported by the linter itself."""

from __future__ import annotations

from ..findings import Severity
from ._rule import Scope

RULE = "unused-suppression"
SEVERITY = Severity.WARNING
SCOPE = Scope.ENGINE
SUMMARY = "an inline `safe-migrate: ignore` comment that silences nothing"
HINT = "remove the comment, or move it onto (or just above) the statement it is for"
