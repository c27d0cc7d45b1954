"""Unit tests of the retry policy, its strategies, hooks and the lock-retry schedule.

Nothing sleeps: every policy gets a fake clock and sleep.
"""

from __future__ import annotations

import logging
import random
import typing as t

import psycopg2
import pytest
import sqlalchemy as sa

from flask_safe_migrate.core.disconnects import ErrorKind
from flask_safe_migrate.core.exceptions import RetryExhaustedError
from flask_safe_migrate.core.retry import RetryIf
from flask_safe_migrate.core.retry import RetryPolicy
from flask_safe_migrate.core.retry import RetryState
from flask_safe_migrate.core.retry import StopAfterAttempt
from flask_safe_migrate.core.retry import StopAfterElapsed
from flask_safe_migrate.core.retry import StopAny
from flask_safe_migrate.core.retry import WaitExponentialFullJitter
from flask_safe_migrate.core.retry import default_policy
from flask_safe_migrate.core.retry import lock_retry_schedule
from flask_safe_migrate.core.retry import log_before_sleep


class FakeTime:
    """A clock that only moves when slept on or ticked, recording each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def tick(self, seconds: float) -> None:
        self.now += seconds


class _SyntaxError(psycopg2.Error):
    """A psycopg2 error carrying SQLSTATE 42601 (syntax_error)."""

    @property
    def pgcode(self) -> str:  # type: ignore[override]  # a stub attribute, C read-only
        return "42601"


class _SerializationFailure(psycopg2.Error):
    """A psycopg2 error carrying SQLSTATE 40001 (serialization_failure)."""

    @property
    def pgcode(self) -> str:  # type: ignore[override]  # a stub attribute, C read-only
        return "40001"


def disconnect() -> sa.exc.OperationalError:
    """Return the error of a connection dropped mid-query."""
    orig = psycopg2.OperationalError("SSL SYSCALL error: EOF detected")
    return sa.exc.OperationalError("SELECT 1", {}, orig, connection_invalidated=True)


def syntax_error() -> sa.exc.ProgrammingError:
    """Return the error of a statement PostgreSQL could not parse."""
    return sa.exc.ProgrammingError("SELEC 1", {}, _SyntaxError("syntax error"))


def serialization_failure() -> sa.exc.OperationalError:
    """Return the error of a serialization conflict."""
    orig = _SerializationFailure("could not serialize access")
    return sa.exc.OperationalError("UPDATE t SET x = 1", {}, orig)


class Flaky:
    """A callable that raises the given errors in turn, then returns ``result``."""

    def __init__(self, *errors: BaseException, result: str = "done") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


@pytest.fixture
def fake_time() -> FakeTime:
    """Give a fake clock and sleep."""
    return FakeTime()


def make_policy(fake_time: FakeTime, **kwargs: t.Any) -> RetryPolicy:
    """Return a policy on the fake clock with fixed 1 s waits unless overridden."""
    kwargs.setdefault("wait", lambda state: 1.0)
    return RetryPolicy(sleep=fake_time.sleep, clock=fake_time, **kwargs)


def state(attempt: int = 1, elapsed: float = 0.0, sleep: float = 0.0) -> RetryState:
    """Return a state for strategy tests."""
    return RetryState(
        attempt=attempt,
        elapsed_seconds=elapsed,
        exception=disconnect(),
        next_sleep_seconds=sleep,
    )


def test_success_first_try(fake_time: FakeTime) -> None:
    """A call that succeeds at once makes one attempt and never sleeps."""
    result, stats = make_policy(fake_time).call(lambda x: x * 2, 21)
    assert result == 42
    assert stats.attempts == 1
    assert stats.errors == ()
    assert stats.sleeps == ()
    assert stats.slept_seconds == 0.0
    assert fake_time.sleeps == []


def test_retry_then_success(fake_time: FakeTime) -> None:
    """Retryable errors are retried, and the stats record each failure and sleep."""
    fn = Flaky(disconnect(), serialization_failure())
    result, stats = make_policy(fake_time).call(fn)
    assert result == "done"
    assert fn.calls == 3
    assert stats.attempts == 3
    assert stats.sleeps == (1.0, 1.0)
    assert stats.slept_seconds == 2.0
    assert stats.elapsed_seconds == 2.0
    assert stats.errors[0].startswith("OperationalError: SSL SYSCALL error")
    assert stats.errors[1].endswith("[SQLSTATE 40001]")
    assert fake_time.sleeps == [1.0, 1.0]


def test_non_retryable_error_reraised_unchanged(fake_time: FakeTime) -> None:
    """A non-retryable error propagates as is after one attempt, without sleeping."""
    error = syntax_error()
    fn = Flaky(error)
    with pytest.raises(sa.exc.ProgrammingError) as info:
        make_policy(fake_time).call(fn)
    assert info.value is error
    assert fn.calls == 1
    assert fake_time.sleeps == []


def test_exhausted_by_attempts(fake_time: FakeTime) -> None:
    """After max_attempts failures, RetryExhaustedError carries the last error."""
    errors = [disconnect() for _ in range(3)]
    fn = Flaky(*errors)
    policy = make_policy(fake_time, stop=StopAfterAttempt(3))
    with pytest.raises(RetryExhaustedError) as info:
        policy.call(fn)
    assert fn.calls == 3
    assert info.value.attempts == 3
    assert info.value.elapsed_seconds == 2.0
    assert info.value.last_exception is errors[-1]
    assert info.value.__cause__ is errors[-1]
    assert str(info.value).startswith("gave up after 3 attempt(s) in 2.0s: ")
    assert "SSL SYSCALL error" in str(info.value)
    # No sleep after the last attempt.
    assert fake_time.sleeps == [1.0, 1.0]


def retry_always(exc: BaseException) -> bool:
    """Retry every error."""
    return True


def test_exhausted_by_elapsed_deadline(fake_time: FakeTime) -> None:
    """The deadline stops before a sleep that would reach it."""

    def fn() -> None:
        fake_time.tick(1.5)
        raise disconnect()

    policy = make_policy(
        fake_time,
        stop=StopAfterElapsed(10.0),
        wait=lambda state: 2.0,
        retry=RetryIf(retry_always),
    )
    with pytest.raises(RetryExhaustedError) as info:
        policy.call(fn)
    # Attempts end at 1.5, 5.0 and 8.5 s; 8.5 + 2.0 would pass 10.
    assert info.value.attempts == 3
    assert info.value.elapsed_seconds == pytest.approx(8.5)
    assert isinstance(info.value.__cause__, sa.exc.OperationalError)
    assert fake_time.sleeps == [2.0, 2.0]


def test_single_attempt_never_sleeps(fake_time: FakeTime) -> None:
    """With one attempt allowed, a retryable failure gives up without sleeping."""
    with pytest.raises(RetryExhaustedError):
        make_policy(fake_time, stop=StopAfterAttempt(1)).call(Flaky(disconnect()))
    assert fake_time.sleeps == []


def test_keyboard_interrupt_not_retried(fake_time: FakeTime) -> None:
    """KeyboardInterrupt propagates at once, even when every error is retried."""
    fn = Flaky(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        make_policy(fake_time, retry=RetryIf(retry_always)).call(fn)
    assert fn.calls == 1
    assert fake_time.sleeps == []


def test_negative_wait_clamped_to_zero(fake_time: FakeTime) -> None:
    """A wait strategy returning a negative number sleeps zero seconds."""
    _, stats = make_policy(fake_time, wait=lambda s: -1.0).call(Flaky(disconnect()))
    assert stats.sleeps == (0.0,)


def test_wait_full_jitter_bounds() -> None:
    """Full jitter draws within [0, capped exponential] and is seeded by rng."""
    wait = WaitExponentialFullJitter(initial=1.0, maximum=4.0, rng=random.Random(7))
    again = WaitExponentialFullJitter(initial=1.0, maximum=4.0, rng=random.Random(7))
    for attempt in range(1, 12):
        ceiling = min(1.0 * 2 ** (attempt - 1), 4.0)
        draws = [wait(state(attempt)) for _ in range(50)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert draws == [again(state(attempt)) for _ in range(50)]
    late = [wait(state(10)) for _ in range(200)]
    assert max(late) > 2.0  # the cap bounds the draws; it does not pin them to zero
    assert all(0.0 <= wait(state(5000)) <= 4.0 for _ in range(10))  # float overflow


def test_stop_composition() -> None:
    """Stops compose with | (either), a plain function on the right included."""
    either = StopAfterAttempt(3) | StopAfterElapsed(10.0)
    assert not either(state(2, elapsed=5.0))
    assert either(state(3, elapsed=5.0))
    assert either(state(2, elapsed=9.0, sleep=1.0))
    assert (StopAfterAttempt(9) | (lambda s: s.attempt == 2))(state(2))


def test_invalid_strategy_arguments() -> None:
    """Out-of-range arguments are refused when the strategy is built."""
    with pytest.raises(ValueError, match="max_attempts"):
        StopAfterAttempt(0)
    with pytest.raises(ValueError, match="max_seconds"):
        StopAfterElapsed(-1.0)
    with pytest.raises(ValueError, match="initial"):
        WaitExponentialFullJitter(initial=-0.1)


def test_before_sleep_receives_next_sleep(fake_time: FakeTime) -> None:
    """The before_sleep hook sees each failed attempt with the chosen sleep."""
    seen: list[RetryState] = []
    policy = make_policy(
        fake_time, wait=lambda s: float(s.attempt), before_sleep=seen.append
    )
    policy.call(Flaky(disconnect(), disconnect()))
    assert [(s.attempt, s.next_sleep_seconds) for s in seen] == [(1, 1.0), (2, 2.0)]
    assert [s.elapsed_seconds for s in seen] == [0.0, 1.0]
    assert all(isinstance(s.exception, sa.exc.OperationalError) for s in seen)


def test_log_before_sleep(
    fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    """log_before_sleep logs the attempt, error, error class, SQLSTATE and sleep."""
    logger = logging.getLogger("tests.retry")
    policy = make_policy(
        fake_time, wait=lambda s: 0.5, before_sleep=log_before_sleep(logger)
    )
    with caplog.at_level(logging.WARNING, logger="tests.retry"):
        policy.call(Flaky(serialization_failure(), disconnect()))
    first, second = caplog.records
    assert first.levelno == logging.WARNING
    assert first.getMessage() == (
        "attempt 1 failed: _SerializationFailure: could not serialize access"
        f" [SQLSTATE 40001] (class {ErrorKind.CONFLICT.value}, SQLSTATE 40001);"
        " retrying in 0.50s"
    )
    assert second.getMessage().startswith("attempt 2 failed: OperationalError: SSL")
    assert f"(class {ErrorKind.DISCONNECT.value}, SQLSTATE -)" in second.getMessage()


def test_default_policy(fake_time: FakeTime) -> None:
    """default_policy stops on attempts or the deadline and jitters within the cap."""
    policy = default_policy(
        max_attempts=4,
        backoff_seconds=1.0,
        backoff_max_seconds=2.0,
        sleep=fake_time.sleep,
        clock=fake_time,
        rng=random.Random(3),
    )
    assert policy.stop == StopAny(StopAfterAttempt(4), StopAfterElapsed(120.0))
    with pytest.raises(RetryExhaustedError) as info:
        policy.call(Flaky(*(disconnect() for _ in range(5))))
    assert info.value.attempts == 4
    caps = [1.0, 2.0, 2.0]
    assert all(0.0 <= s <= c for s, c in zip(fake_time.sleeps, caps, strict=True))
    assert default_policy(max_elapsed_seconds=None).stop == StopAfterAttempt(10)


def test_default_policy_retries_only_retryable(fake_time: FakeTime) -> None:
    """The default retry strategy declines a syntax error."""
    fn = Flaky(syntax_error())
    with pytest.raises(sa.exc.ProgrammingError):
        default_policy(sleep=fake_time.sleep, clock=fake_time).call(fn)
    assert fn.calls == 1


def test_lock_schedule_grows_to_the_maximum_with_pauses() -> None:
    """Lock timeouts start small and grow to the cap; long waits pause longer."""
    rng = random.Random(1)
    plan = [
        lock_retry_schedule(i, initial_seconds=0.1, maximum_seconds=2.0, rng=rng)
        for i in range(20)
    ]
    timeouts = [p.lock_timeout_seconds for p in plan]
    assert timeouts[0] == pytest.approx(0.1)
    assert timeouts == sorted(timeouts)
    assert timeouts[-1] == 2.0
    assert sum(s for s in timeouts if s < 1.0) > 2.0, "many short attempts come first"
    for p in plan:
        factor = 1.0 if p.lock_timeout_seconds < 1.0 else 3.0
        low = 0.8 * factor * p.lock_timeout_seconds
        assert low <= p.pause_seconds <= 1.2 * factor * p.lock_timeout_seconds
