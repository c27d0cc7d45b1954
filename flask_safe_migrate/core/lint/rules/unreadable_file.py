"""Rule unreadable-file: a Python file the verifier could not read or parse."""

from __future__ import annotations

from ..findings import Severity
from ._rule import Scope

RULE = "unreadable-file"
SEVERITY = Severity.WARNING
SCOPE = Scope.ENGINE
SUMMARY = "a Python file given to the verifier that could not be read or parsed"
HINT = "fix the file's syntax or encoding, or leave it out of the paths to check"
