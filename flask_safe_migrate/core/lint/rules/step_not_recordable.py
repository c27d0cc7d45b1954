"""Rule step-not-recordable: reported by the linter itself."""

from __future__ import annotations

from ..findings import Severity
from ._rule import Scope

RULE = "step-not-recordable"
SEVERITY = Severity.WARNING
SCOPE = Scope.ENGINE
SUMMARY = (
    "a function step raised while its SQL was recorded, so part of it was not checked"
)
HINT = (
    "make the step's function work on a recording handle (execute() returns no "
    "rows there), or move what needs query results into the SQL"
)
