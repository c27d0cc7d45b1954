"""Collect the SQL of each step: its text, or what its function sends when recorded."""

from __future__ import annotations

import os
import re
import sys
import typing as t
from dataclasses import dataclass
from dataclasses import field

from ..recording import RecordingHandle
from ..sql import SqlSyntaxError
from ..sql import Statement
from ..sql import split_statements
from ..steps import Step

__all__ = ["CollectedStep", "Piece", "collect_step", "display_path", "parse_piece"]

#: ``:name`` (SQLAlchemy), ``%(name)s`` and ``%s`` (DB-API) bind markers.
_BINDS = re.compile(r"(?<![:\w]):\w+|%\(\w+\)s|%s")


@dataclass
class Piece:
    """One SQL text of a step: the step's SQL, or one ``execute()`` call."""

    sql: str
    #: ``file:line`` of the step, or of the ``execute()`` call that sent it.
    location: str
    #: The Python file and line of the ``execute()`` call (function steps).
    python_file: str | None = None
    python_line: int | None = None
    statements: list[Statement] = field(default_factory=list)
    syntax_error: SqlSyntaxError | None = None


@dataclass
class CollectedStep:
    """A step and its SQL, split into pieces and statements."""

    step: Step
    pieces: list[Piece]
    #: Why recording the step's function stopped early, if it did.
    record_error: str | None = None

    @property
    def complete(self) -> bool:
        """Whether all of the step's SQL was collected and parsed."""
        return self.record_error is None and not any(
            p.syntax_error for p in self.pieces
        )

    @property
    def statements(self) -> list[Statement]:
        """Every statement of the step, in order."""
        return [s for p in self.pieces for s in p.statements]


class LocatingHandle(RecordingHandle):
    """A recording handle that also notes where each ``execute()`` was called."""

    def __init__(self, step: Step, filename: str | None) -> None:
        super().__init__(step)
        self.filename = filename
        self.calls: list[tuple[str, int | None]] = []

    def execute(
        self, sql: str, params: t.Mapping[str, t.Any] | None = None
    ) -> list[tuple[t.Any, ...]]:
        """Record ``sql`` and the line of the step's code that sent it."""
        line = None
        frame = sys._getframe(1)
        while frame is not None:
            if self.filename and (
                os.path.abspath(frame.f_code.co_filename) == self.filename
            ):
                line = frame.f_lineno
                break
            frame = frame.f_back  # type: ignore[assignment]  # None ends the loop
        text = _BINDS.sub("$1", sql) if params else sql
        self.calls.append((text, line))
        return super().execute(sql, params)


def collect_step(step: Step) -> CollectedStep:
    """Return the SQL of *step*, running a function step on a recording handle.

    A function step that raises while being recorded keeps what it sent before.
    """
    if step.sql is not None:
        piece = Piece(sql=step.sql, location=step.location)
        parse_piece(piece)
        return CollectedStep(step=step, pieces=[piece])
    assert step.fn is not None
    code = getattr(step.fn, "__code__", None)
    filename = os.path.abspath(code.co_filename) if code is not None else None
    handle = LocatingHandle(step, filename)
    error = None
    try:
        step.fn(handle)
    except Exception as exc:  # any error of user code: report it, check the rest
        error = f"{type(exc).__name__}: {exc}"
    pieces = []
    for sql, line in handle.calls:
        location = (
            f"{display_path(filename)}:{line}"
            if filename is not None and line is not None
            else step.location
        )
        piece = Piece(
            sql=sql, location=location, python_file=filename, python_line=line
        )
        parse_piece(piece)
        pieces.append(piece)
    return CollectedStep(step=step, pieces=pieces, record_error=error)


def parse_piece(piece: Piece) -> None:
    """Split the piece's SQL into statements, or note its syntax error."""
    try:
        piece.statements = split_statements(piece.sql)
    except SqlSyntaxError as exc:
        piece.syntax_error = exc


def display_path(filename: str) -> str:
    """Return *filename* relative to the working directory when it is below it."""
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel
