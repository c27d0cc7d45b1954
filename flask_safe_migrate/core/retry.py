"""Retry policy: run a whole step attempt again after a retryable database error.

Shaped like tenacity, kept to what the project uses. A :class:`RetryPolicy` holds
three strategies, each a callable taking the frozen :class:`RetryState` of the
attempt that just failed: *retry* decides whether the error is worth another
attempt, *wait* chooses the sleep before it, and *stop*, knowing that sleep,
decides whether to give up instead. Stops compose with ``|``::

    policy = RetryPolicy(
        stop=StopAfterAttempt(5) | StopAfterElapsed(120),
        wait=WaitExponentialFullJitter(initial=0.5, maximum=30),
        retry=RetryIf(is_retryable),
        before_sleep=log_before_sleep(logger),
    )
    result, stats = policy.call(run_step, step)

``sleep``, ``clock`` and the jitter's ``rng`` are injected, so tests never sleep.
(tenacity reads ``time.monotonic`` and the global :mod:`random` itself, which is why
this is not a wrapper around it.) Which errors to retry is PostgreSQL knowledge:
:class:`RetryIf` takes a predicate of :mod:`~flask_safe_migrate.core.disconnects`
(``is_retryable``, ``is_disconnect``), and :func:`log_before_sleep` names the error
kind and SQLSTATE. :func:`lock_retry_schedule` is the growing ``lock_timeout`` of
the schema phase. A policy holds no mutable state: threads may share one.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import typing as t
from dataclasses import dataclass
from dataclasses import field

from .disconnects import classify_error
from .disconnects import describe_error
from .disconnects import error_sqlstate
from .disconnects import is_retryable
from .exceptions import RetryExhaustedError

__all__ = [
    "LockAttempt",
    "Retry",
    "RetryIf",
    "RetryPolicy",
    "RetryState",
    "RetryStats",
    "Stop",
    "StopAfterAttempt",
    "StopAfterElapsed",
    "StopAny",
    "StopBase",
    "Wait",
    "WaitExponentialFullJitter",
    "default_policy",
    "lock_retry_schedule",
    "log_before_sleep",
]

_P = t.ParamSpec("_P")
_R = t.TypeVar("_R")


@dataclass(frozen=True)
class RetryState:
    """What the strategies know about the attempt that just failed.

    :param attempt: 1-based number of the attempt that just failed.
    :param elapsed_seconds: time since the first attempt began, on the policy's clock.
    :param exception: what that attempt raised.
    :param next_sleep_seconds: the sleep chosen before the next attempt; set after the
        wait strategy ran, so stop strategies and ``before_sleep`` hooks see it.
    """

    attempt: int
    elapsed_seconds: float
    exception: BaseException
    next_sleep_seconds: float = 0.0


#: A stop strategy: return ``True`` to give up instead of sleeping and retrying.
Stop: t.TypeAlias = t.Callable[[RetryState], bool]
#: A wait strategy: return the seconds to sleep before the next attempt.
Wait: t.TypeAlias = t.Callable[[RetryState], float]
#: A retry strategy: return ``True`` if the failed attempt may be retried.
Retry: t.TypeAlias = t.Callable[[RetryState], bool]


class StopBase:
    """Base of the stop strategies: ``a | b`` stops when either does."""

    def __call__(self, state: RetryState) -> bool:
        """Return whether to give up after the attempt described by ``state``."""
        raise NotImplementedError

    def __or__(self, other: Stop) -> StopAny:
        return StopAny(self, other)


@dataclass(frozen=True, init=False)
class StopAny(StopBase):
    """Stop when any of ``stops`` says so (``a | b``)."""

    stops: tuple[Stop, ...]

    def __init__(self, *stops: Stop) -> None:
        object.__setattr__(self, "stops", stops)

    def __call__(self, state: RetryState) -> bool:
        """Return whether any of the strategies stops."""
        return any(stop(state) for stop in self.stops)


@dataclass(frozen=True)
class StopAfterAttempt(StopBase):
    """Stop once ``max_attempts`` attempts (the first one included) have failed.

    :raises ValueError: if ``max_attempts`` is below 1.
    """

    max_attempts: int

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(
                f"max_attempts must be at least 1, not {self.max_attempts}"
            )

    def __call__(self, state: RetryState) -> bool:
        """Return whether the attempt budget is spent."""
        return state.attempt >= self.max_attempts


@dataclass(frozen=True)
class StopAfterElapsed(StopBase):
    """Stop when the next attempt would start at or after ``max_seconds``.

    The deadline counts from the start of the first attempt and includes the sleep
    already chosen, so the policy never sleeps past it only to give up on waking.

    :raises ValueError: if ``max_seconds`` is negative.
    """

    max_seconds: float

    def __post_init__(self) -> None:
        if self.max_seconds < 0:
            raise ValueError(
                f"max_seconds must not be negative, not {self.max_seconds}"
            )

    def __call__(self, state: RetryState) -> bool:
        """Return whether sleeping and retrying would reach the deadline."""
        return state.elapsed_seconds + state.next_sleep_seconds >= self.max_seconds


@dataclass(frozen=True)
class WaitExponentialFullJitter:
    """Sleep a uniform random time up to a bound doubling from ``initial``.

    The bound is ``min(initial * 2 ** (attempt - 1), maximum)``. This is AWS's
    "full jitter": runners that failed together spread their retries over the whole
    window instead of hitting the database again in step.

    :param rng: the random generator; the :mod:`random` module's (thread-safe) by
        default. Pass a seeded :class:`random.Random` for reproducible sleeps.
    :raises ValueError: if a duration is negative.
    """

    initial: float = 0.25
    maximum: float = 30.0
    rng: random.Random | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0:
            raise ValueError(
                f"initial and maximum must not be negative, not "
                f"{self.initial} and {self.maximum}"
            )

    def __call__(self, state: RetryState) -> float:
        """Return a sleep drawn from ``[0, capped exponential]``."""
        try:
            ceiling = min(self.initial * 2 ** (state.attempt - 1), self.maximum)
        except OverflowError:  # only far past any sensible cap
            ceiling = self.maximum
        return (self.rng or random).uniform(0.0, ceiling)


@dataclass(frozen=True)
class RetryIf:
    """Retry when ``predicate(state.exception)`` is true.

    :param predicate: e.g. :func:`~flask_safe_migrate.core.disconnects.is_retryable`
        or :func:`~flask_safe_migrate.core.disconnects.is_disconnect`.
    """

    predicate: t.Callable[[BaseException], bool]

    def __call__(self, state: RetryState) -> bool:
        """Return ``predicate(state.exception)``."""
        return self.predicate(state.exception)


@dataclass(frozen=True)
class RetryStats:
    """What one :meth:`RetryPolicy.call` took to succeed.

    :param attempts: attempts made, the successful one included.
    :param elapsed_seconds: from the start of the first attempt to the end of the
        last, on the policy's clock.
    :param slept_seconds: total time slept between attempts.
    :param errors: :func:`~flask_safe_migrate.core.disconnects.describe_error` of each
        failed attempt, in order.
    :param sleeps: each sleep between attempts, in order.
    """

    attempts: int
    elapsed_seconds: float
    slept_seconds: float
    errors: tuple[str, ...]
    sleeps: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Run a callable again while it fails with a retryable error.

    :param stop: when to give up; 10 attempts by default.
    :param wait: the sleep before each retry; exponential with full jitter by default.
    :param retry: which errors to retry; those of
        :func:`~flask_safe_migrate.core.disconnects.is_retryable` by default.
    :param before_sleep: a hook called with the state before each sleep, e.g.
        :func:`log_before_sleep`.
    :param sleep: the sleep function; tests pass a fake.
    :param clock: the monotonic clock, in seconds; tests pass a fake.
    """

    stop: Stop = StopAfterAttempt(10)
    wait: Wait = WaitExponentialFullJitter()
    retry: Retry = RetryIf(is_retryable)
    before_sleep: t.Callable[[RetryState], None] | None = None
    sleep: t.Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: t.Callable[[], float] = field(default=time.monotonic, repr=False)

    def call(
        self, fn: t.Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> tuple[_R, RetryStats]:
        """Call ``fn(*args, **kwargs)``, retrying it as the strategies decide.

        After a failed attempt: an error that is not an :class:`Exception`
        (``KeyboardInterrupt``) propagates at once; an error the retry strategy
        declines propagates unchanged. Otherwise the wait strategy picks the sleep,
        and the stop strategy, seeing it, may give up. No sleep follows the last
        attempt.

        :param fn: the whole unit to retry, e.g. one step attempt in its own
            transaction; never one statement inside a broken transaction.
        :raises RetryExhaustedError: when the stop strategy gives up; its
            ``last_exception`` (also ``__cause__``) is the last attempt's error.
        :returns: ``fn``'s result and the :class:`RetryStats` of the run.
        """
        start = self.clock()
        errors: list[str] = []
        sleeps: list[float] = []
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                state = RetryState(len(errors) + 1, self.clock() - start, exc)
                if not self.retry(state):
                    raise
                errors.append(describe_error(exc))
                state = dataclasses.replace(
                    state, next_sleep_seconds=max(0.0, self.wait(state))
                )
                if self.stop(state):
                    raise RetryExhaustedError(
                        f"gave up after {state.attempt} attempt(s) in "
                        f"{state.elapsed_seconds:.1f}s: {errors[-1]}",
                        attempts=state.attempt,
                        elapsed_seconds=state.elapsed_seconds,
                        last_exception=exc,
                    ) from exc
                if self.before_sleep is not None:
                    self.before_sleep(state)
                self.sleep(state.next_sleep_seconds)
                sleeps.append(state.next_sleep_seconds)
            else:
                elapsed = self.clock() - start
                stats = RetryStats(
                    len(errors) + 1, elapsed, sum(sleeps), tuple(errors), tuple(sleeps)
                )
                return result, stats


def log_before_sleep(
    logger: logging.Logger, level: int = logging.WARNING
) -> t.Callable[[RetryState], None]:
    """Return a ``before_sleep`` hook that logs each retry on ``logger``.

    One line per retry: the attempt, the error, its
    :class:`~flask_safe_migrate.core.disconnects.ErrorKind`, its SQLSTATE (``-`` when
    it has none) and the coming sleep.
    """

    def hook(state: RetryState) -> None:
        exc = state.exception
        logger.log(
            level,
            "attempt %d failed: %s (class %s, SQLSTATE %s); retrying in %.2fs",
            state.attempt,
            describe_error(exc),
            classify_error(exc).value,
            error_sqlstate(exc) or "-",
            state.next_sleep_seconds,
        )

    return hook


def default_policy(
    *,
    max_attempts: int = 10,
    backoff_seconds: float = 0.25,
    backoff_max_seconds: float = 30.0,
    max_elapsed_seconds: float | None = 120.0,
    retry: Retry | None = None,
    before_sleep: t.Callable[[RetryState], None] | None = None,
    sleep: t.Callable[[float], None] = time.sleep,
    clock: t.Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> RetryPolicy:
    """Return the policy of the ``SAFE_MIGRATE_RETRY_*`` settings.

    It stops after ``max_attempts`` or at the ``max_elapsed_seconds`` deadline
    (``None``: none), whichever comes first, and waits with full jitter under a
    bound doubling from ``backoff_seconds`` up to ``backoff_max_seconds``. ``retry``
    defaults to :func:`~flask_safe_migrate.core.disconnects.is_retryable`.

    :raises ValueError: if a value is out of range.
    """
    attempts = StopAfterAttempt(max_attempts)
    return RetryPolicy(
        stop=(
            attempts
            if max_elapsed_seconds is None
            else attempts | StopAfterElapsed(max_elapsed_seconds)
        ),
        wait=WaitExponentialFullJitter(backoff_seconds, backoff_max_seconds, rng=rng),
        retry=RetryIf(is_retryable) if retry is None else retry,
        before_sleep=before_sleep,
        sleep=sleep,
        clock=clock,
    )


# -- the lock-retry schedule ---------------------------------------------------------

#: Growth of the lock timeout from one attempt to the next.
_LOCK_GROWTH = 1.35
#: Once an attempt may hold live queries for a second or more, pause this many
#: times longer than it waited, so at most a quarter of the time is spent waiting.
_LONG_PAUSE_FACTOR = 3.0


@dataclass(frozen=True)
class LockAttempt:
    """The ``lock_timeout`` of one schema step attempt and the pause after it fails."""

    lock_timeout_seconds: float
    pause_seconds: float


def lock_retry_schedule(
    attempt: int,
    *,
    initial_seconds: float,
    maximum_seconds: float,
    rng: random.Random | None = None,
) -> LockAttempt:
    """Return the lock timeout of ``attempt`` (0-based) and the pause that follows it.

    While an ``ALTER TABLE`` waits for its lock, every later query on the table
    queues behind it. So each attempt waits briefly, the timeout growing by 1.35
    per attempt from ``initial_seconds`` to ``maximum_seconds``, with pauses in
    between during which the queued queries drain (GitLab's ``WithLockRetries``
    timing, in closed form). The pause equals the timeout while it is under one
    second, then three times it, so the share of time live queries can be held up
    stays small however long the blocker lasts. Pauses get ±20% jitter so that
    several migrators do not retry in lockstep.
    """
    timeout = min(maximum_seconds, initial_seconds * _LOCK_GROWTH**attempt)
    pause = timeout if timeout < 1.0 else timeout * _LONG_PAUSE_FACTOR
    jitter = (rng or random).uniform(0.8, 1.2)
    return LockAttempt(lock_timeout_seconds=timeout, pause_seconds=pause * jitter)
