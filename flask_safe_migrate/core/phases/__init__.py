"""Phase runners: how a step of each phase is applied exactly once."""

from __future__ import annotations

import logging
import random
import time
import typing as t
from dataclasses import dataclass

import sqlalchemy as sa

from ..ledger import Ledger
from ..retry import RetryPolicy
from ..retry import RetryState
from ..retry import log_before_sleep
from ..settings import MigrateSettings
from ..steps import Step
from ..transaction import settings_policy

__all__ = ["PhaseRunner", "StepOutcome"]


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


class PhaseRunner:
    """What the phase runners share: settings, engine, ledger, injectable time."""

    def __init__(
        self,
        settings: MigrateSettings,
        engine: sa.Engine,
        ledger: Ledger,
        *,
        sleep: t.Callable[[float], None] = time.sleep,
        clock: t.Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        before_sleep: t.Callable[[RetryState], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.ledger = ledger
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._before_sleep = before_sleep or log_before_sleep(
            logging.getLogger(type(self).__module__)
        )

    def apply(self, step: Step, *, deadline: float | None = None) -> StepOutcome:
        """Apply ``step`` unless the ledger has it; stop at ``deadline`` if it can."""
        raise NotImplementedError

    def policy(
        self, retry: t.Callable[[BaseException], bool] | None = None
    ) -> RetryPolicy:
        """The disconnect retry policy from the settings (``retry``: what to retry)."""
        return settings_policy(
            self.settings,
            retry=retry,
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            clock=self._clock,
            rng=self._rng,
        )

    def backoff(self, failures: int) -> float:
        """Exponential backoff with full jitter after ``failures`` failures in a row."""
        cap = min(
            self.settings.retry_backoff_max_seconds,
            self.settings.retry_backoff_seconds * 2 ** (failures - 1),
        )
        return (self._rng or random).uniform(0, cap)
