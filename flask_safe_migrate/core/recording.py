"""The recording handle: a step handle that records SQL instead of sending it."""

from __future__ import annotations

import typing as t

from .steps import Step

__all__ = ["RecordingHandle"]


class RecordingHandle:
    """A step handle that records SQL instead of sending it (plan, check).

    For a backfill function it is the first batch: ``after`` is None and ``limit``
    the first batch size.
    """

    def __init__(self, step: Step, *, limit: int = 1000) -> None:
        self._step = step
        self._limit = limit
        self.statements: list[str] = []

    @property
    def step(self) -> Step:
        """The step being recorded."""
        return self._step

    @property
    def after(self) -> t.Any:
        """No checkpoint: the first batch."""
        return None

    @property
    def limit(self) -> int:
        """The first batch size."""
        return self._limit

    def execute(
        self, sql: str, params: t.Mapping[str, t.Any] | None = None
    ) -> list[tuple[t.Any, ...]]:
        """Record ``sql`` (with ``params`` shown as a comment) and return no rows."""
        suffix = f"  -- params: {dict(params)!r}" if params else ""
        self.statements.append(sql.strip() + suffix)
        return []
