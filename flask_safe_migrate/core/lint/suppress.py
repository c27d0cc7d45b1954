"""Inline suppressions: ``-- safe-migrate: ignore RULE reason`` (``#`` in Python)."""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass

from ..sql import sql_comments

__all__ = [
    "Suppression",
    "parse_suppression",
    "python_suppressions",
    "sql_suppressions",
]

_PATTERN = re.compile(
    r"^safe-migrate:\s*ignore\b\s*(?P<rules>[\w-]+(?:\s*,\s*[\w-]+)*)?\s*(?P<reason>.*)$",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class Suppression:
    """One ``safe-migrate: ignore`` comment."""

    #: The rule ids it names (one or more, comma-separated in the comment).
    rules: tuple[str, ...]
    #: Why the finding is acceptable here; ``""`` when missing (itself an error).
    reason: str
    #: 1-based line of the comment (in the SQL text, or in the Python file).
    line: int

    def covers(self, first_line: int, last_line: int) -> bool:
        """Whether it sits on lines ``first_line..last_line`` or the line above."""
        return first_line - 1 <= self.line <= last_line


def parse_suppression(text: str, line: int) -> Suppression | None:
    """Return the suppression a comment's text holds, or None if it is not one."""
    match = _PATTERN.match(text.strip())
    if match is None:
        return None
    rules = tuple(
        r.strip() for r in (match.group("rules") or "").split(",") if r.strip()
    )
    reason = " ".join(match.group("reason").split())
    return Suppression(rules=rules, reason=reason, line=line)


def sql_suppressions(sql: str) -> list[Suppression]:
    """Return the suppressions in the comments of *sql*."""
    if "safe-migrate" not in sql.lower():
        return []  # the common case, without scanning
    found = (parse_suppression(c.text, c.line) for c in sql_comments(sql))
    return [s for s in found if s is not None]


def python_suppressions(source: str) -> list[Suppression]:
    """Return the suppressions in the ``#`` comments of Python *source*."""
    found = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                item = parse_suppression(token.string[1:], token.start[0])
                if item is not None:
                    found.append(item)
    except (tokenize.TokenError, SyntaxError):
        return found
    return found
