"""Rule invalid-suppression: reported by the linter itself."""

from __future__ import annotations

from ..findings import Severity
from ._rule import Scope

RULE = "invalid-suppression"
SEVERITY = Severity.ERROR
SCOPE = Scope.ENGINE
SUMMARY = (
    "an inline `safe-migrate: ignore` comment without a reason, or naming an "
    "unknown rule"
)
HINT = "write `-- safe-migrate: ignore RULE-ID why it is safe here` (`#` in Python)"
