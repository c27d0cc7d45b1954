"""Phase runners: how a step of each phase is applied exactly once."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StepOutcome"]


@dataclass(frozen=True)
class StepOutcome:
    """What happened to one step in a run.

    ``status`` is ``applied`` (this run applied it), ``skipped`` (another runner
    applied it first), ``planned`` (dry run), or ``partial`` (a backfill stopped by
    its time budget, to be resumed).
    """

    step_id: str
    phase: str
    status: str
    attempts: int = 1
    duration_seconds: float = 0.0
    detail: str = ""
