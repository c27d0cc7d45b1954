"""Type checks of the retry API, run by mypy only (never imported or collected)."""

from __future__ import annotations

import logging
import typing as t

from flask_safe_migrate.core.retry import RetryIf
from flask_safe_migrate.core.retry import RetryPolicy
from flask_safe_migrate.core.retry import RetryState
from flask_safe_migrate.core.retry import RetryStats
from flask_safe_migrate.core.retry import StopAfterAttempt
from flask_safe_migrate.core.retry import StopAfterElapsed
from flask_safe_migrate.core.retry import StopAny
from flask_safe_migrate.core.retry import default_policy
from flask_safe_migrate.core.retry import log_before_sleep

policy = RetryPolicy()


def add_one(x: int) -> int:
    return x + 1


def run_step(step_id: str, *, batch_size: int = 100) -> list[str]:
    return [step_id] * batch_size


# call returns the function's result with the stats, and checks the arguments.
t.assert_type(policy.call(add_one, 1), tuple[int, RetryStats])
t.assert_type(policy.call(run_step, "s", batch_size=5), tuple[list[str], RetryStats])
policy.call(add_one, "1")  # type: ignore[arg-type]
policy.call(run_step, "s", batch=5)  # type: ignore[call-arg]

# Stops compose with |, and plain functions are strategies too.
t.assert_type(StopAfterAttempt(3) | StopAfterElapsed(10), StopAny)


def after_three(state: RetryState) -> bool:
    return state.attempt >= 3


t.assert_type(StopAfterElapsed(10) | after_three, StopAny)
RetryPolicy(stop=after_three, wait=lambda state: 1.0, retry=RetryIf(bool))
RetryPolicy(wait=lambda state: "1")  # type: ignore[arg-type, return-value]
RetryPolicy(StopAfterAttempt(3))  # type: ignore[call-arg]

# default_policy returns a policy; hooks take a state.
t.assert_type(default_policy(max_attempts=3), RetryPolicy)
hook = log_before_sleep(logging.getLogger(__name__))
t.assert_type(hook, t.Callable[[RetryState], None])
