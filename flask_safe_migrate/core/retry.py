"""Retry policy: run a whole step attempt again after a retryable database error.

Shaped like tenacity. A :class:`RetryPolicy` is built from three strategies, each a
callable taking the frozen :class:`RetryState` of the attempt that just failed:

* *retry* decides whether the error is worth another attempt at all;
* *wait* chooses the sleep before that attempt;
* *stop* decides, knowing that sleep, whether to give up instead.

Stop and retry strategies compose with ``|`` (either) and ``&`` (both), waits with
``+`` (sum)::

    policy = RetryPolicy(
        stop=StopAfterAttempt(5) | StopAfterElapsed(120),
        wait=WaitExponential(initial=0.5, maximum=30) + WaitJitter(0.5),
        retry=RetryIf(is_disconnect),
        before_sleep=log_before_sleep(logger),
    )
    result, stats = policy.call(run_step, step)

``sleep`` and ``clock`` are constructor arguments, so tests never sleep. A policy holds
no mutable state: one policy may serve several threads at once.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import functools
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
    "Retry",
    "RetryAll",
    "RetryAlways",
    "RetryAny",
    "RetryBase",
    "RetryIf",
    "RetryNever",
    "RetryPolicy",
    "RetryState",
    "RetryStats",
    "Stop",
    "StopAfterAttempt",
    "StopAfterElapsed",
    "StopAll",
    "StopAny",
    "StopBase",
    "StopNever",
    "Wait",
    "WaitBase",
    "WaitCombine",
    "WaitExponential",
    "WaitExponentialFullJitter",
    "WaitFixed",
    "WaitJitter",
    "chain_hooks",
    "default_policy",
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


# -- stop ---------------------------------------------------------------------------


class StopBase(abc.ABC):
    """Base of the stop strategies; combine them with ``|`` and ``&``."""

    @abc.abstractmethod
    def __call__(self, state: RetryState) -> bool:
        """Return whether to give up after the attempt described by ``state``."""

    def __or__(self, other: Stop) -> StopAny:
        return StopAny(self, other)

    def __ror__(self, other: Stop) -> StopAny:
        return StopAny(other, self)

    def __and__(self, other: Stop) -> StopAll:
        return StopAll(self, other)

    def __rand__(self, other: Stop) -> StopAll:
        return StopAll(other, self)


@dataclass(frozen=True, init=False)
class StopAny(StopBase):
    """Stop when any of ``stops`` says so (``a | b``)."""

    stops: tuple[Stop, ...]

    def __init__(self, *stops: Stop) -> None:
        object.__setattr__(self, "stops", stops)

    def __call__(self, state: RetryState) -> bool:
        """Return whether any of the strategies stops."""
        return any(stop(state) for stop in self.stops)


@dataclass(frozen=True, init=False)
class StopAll(StopBase):
    """Stop when all of ``stops`` say so (``a & b``)."""

    stops: tuple[Stop, ...]

    def __init__(self, *stops: Stop) -> None:
        object.__setattr__(self, "stops", stops)

    def __call__(self, state: RetryState) -> bool:
        """Return whether every strategy stops."""
        return all(stop(state) for stop in self.stops)


@dataclass(frozen=True)
class StopAfterAttempt(StopBase):
    """Stop once ``max_attempts`` attempts have failed.

    :param max_attempts: total attempts allowed, the first one included; at least 1.
    :raises ValueError: if ``max_attempts`` is below 1.
    """

    max_attempts: int

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(
                f"max_attempts must be at least 1, not {self.max_attempts!r}"
            )

    def __call__(self, state: RetryState) -> bool:
        """Return whether the attempt budget is spent."""
        return state.attempt >= self.max_attempts


@dataclass(frozen=True)
class StopAfterElapsed(StopBase):
    """Stop when the next attempt would start at or after a total deadline.

    The deadline counts from the start of the first attempt and includes the sleep
    already chosen (``elapsed_seconds + next_sleep_seconds``), so the policy never
    sleeps past it only to give up on waking.

    :param max_seconds: the total time budget, in seconds.
    :raises ValueError: if ``max_seconds`` is negative.
    """

    max_seconds: float

    def __post_init__(self) -> None:
        _check_not_negative(max_seconds=self.max_seconds)

    def __call__(self, state: RetryState) -> bool:
        """Return whether sleeping and retrying would reach the deadline."""
        return state.elapsed_seconds + state.next_sleep_seconds >= self.max_seconds


@dataclass(frozen=True)
class StopNever(StopBase):
    """Never stop; pair it with a retry strategy that eventually says no."""

    def __call__(self, state: RetryState) -> bool:
        """Return ``False``."""
        return False


# -- wait ---------------------------------------------------------------------------


class WaitBase(abc.ABC):
    """Base of the wait strategies; add them with ``+``."""

    @abc.abstractmethod
    def __call__(self, state: RetryState) -> float:
        """Return the seconds to sleep before the attempt after ``state``."""

    def __add__(self, other: Wait) -> WaitCombine:
        return WaitCombine(self, other)

    def __radd__(self, other: Wait) -> WaitCombine:
        return WaitCombine(other, self)


@dataclass(frozen=True, init=False)
class WaitCombine(WaitBase):
    """Sleep for the sum of ``waits`` (``a + b``)."""

    waits: tuple[Wait, ...]

    def __init__(self, *waits: Wait) -> None:
        object.__setattr__(self, "waits", waits)

    def __call__(self, state: RetryState) -> float:
        """Return the sum of the strategies' sleeps."""
        return sum(wait(state) for wait in self.waits)


@dataclass(frozen=True)
class WaitFixed(WaitBase):
    """Sleep the same time before every retry.

    :param seconds: the sleep, in seconds.
    :raises ValueError: if ``seconds`` is negative.
    """

    seconds: float

    def __post_init__(self) -> None:
        _check_not_negative(seconds=self.seconds)

    def __call__(self, state: RetryState) -> float:
        """Return ``seconds``."""
        return self.seconds


@dataclass(frozen=True)
class WaitExponential(WaitBase):
    """Sleep ``initial * multiplier ** (attempt - 1)`` seconds, capped at ``maximum``.

    :param initial: the sleep after the first failed attempt, in seconds.
    :param maximum: the cap on one sleep, in seconds.
    :param multiplier: the growth factor from one sleep to the next.
    :raises ValueError: if a duration is negative or ``multiplier`` is not positive.
    """

    initial: float = 0.25
    maximum: float = 30.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        _check_exponential(self.initial, self.maximum, self.multiplier)

    def __call__(self, state: RetryState) -> float:
        """Return the capped exponential sleep for ``state.attempt``."""
        return _capped_exponential(
            self.initial, self.maximum, self.multiplier, state.attempt
        )


@dataclass(frozen=True)
class WaitExponentialFullJitter(WaitBase):
    """Sleep a uniform random time between 0 and the capped exponential sleep.

    This is AWS's "full jitter": runners that failed together spread their retries
    over the whole window instead of hitting the database again in step.

    :param initial: the upper bound after the first failed attempt, in seconds.
    :param maximum: the cap on the upper bound, in seconds.
    :param multiplier: the growth factor of the upper bound.
    :param rng: the random generator; the :mod:`random` module's by default. Pass a
        seeded :class:`random.Random` for reproducible sleeps.
    :raises ValueError: if a duration is negative or ``multiplier`` is not positive.
    """

    initial: float = 0.25
    maximum: float = 30.0
    multiplier: float = 2.0
    rng: random.Random | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_exponential(self.initial, self.maximum, self.multiplier)

    def __call__(self, state: RetryState) -> float:
        """Return a sleep drawn from ``[0, capped exponential]``."""
        ceiling = _capped_exponential(
            self.initial, self.maximum, self.multiplier, state.attempt
        )
        return _uniform(self.rng, ceiling)


@dataclass(frozen=True)
class WaitJitter(WaitBase):
    """Sleep a uniform random time between 0 and ``maximum``; meant to be added.

    :param maximum: the upper bound, in seconds.
    :param rng: the random generator; the :mod:`random` module's by default.
    :raises ValueError: if ``maximum`` is negative.
    """

    maximum: float
    rng: random.Random | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_not_negative(maximum=self.maximum)

    def __call__(self, state: RetryState) -> float:
        """Return a sleep drawn from ``[0, maximum]``."""
        return _uniform(self.rng, self.maximum)


def _uniform(rng: random.Random | None, high: float) -> float:
    # The random module's own generator by default: safe to share between threads.
    return random.uniform(0.0, high) if rng is None else rng.uniform(0.0, high)


def _check_not_negative(**durations: float) -> None:
    for name, value in durations.items():
        if value < 0:
            raise ValueError(f"{name} must not be negative, not {value}")


def _check_exponential(initial: float, maximum: float, multiplier: float) -> None:
    _check_not_negative(initial=initial, maximum=maximum)
    if multiplier <= 0:
        raise ValueError(f"multiplier must be positive, not {multiplier}")


def _capped_exponential(
    initial: float, maximum: float, multiplier: float, attempt: int
) -> float:
    try:
        value = initial * multiplier ** (attempt - 1)
    except OverflowError:
        # A float power this large only happens far past any sensible cap.
        return maximum
    return min(value, maximum)


# -- retry --------------------------------------------------------------------------


class RetryBase(abc.ABC):
    """Base of the retry strategies; combine them with ``|`` and ``&``."""

    @abc.abstractmethod
    def __call__(self, state: RetryState) -> bool:
        """Return whether the attempt described by ``state`` may be retried."""

    def __or__(self, other: Retry) -> RetryAny:
        return RetryAny(self, other)

    def __ror__(self, other: Retry) -> RetryAny:
        return RetryAny(other, self)

    def __and__(self, other: Retry) -> RetryAll:
        return RetryAll(self, other)

    def __rand__(self, other: Retry) -> RetryAll:
        return RetryAll(other, self)


@dataclass(frozen=True, init=False)
class RetryAny(RetryBase):
    """Retry when any of ``retries`` says so (``a | b``)."""

    retries: tuple[Retry, ...]

    def __init__(self, *retries: Retry) -> None:
        object.__setattr__(self, "retries", retries)

    def __call__(self, state: RetryState) -> bool:
        """Return whether any strategy retries."""
        return any(retry(state) for retry in self.retries)


@dataclass(frozen=True, init=False)
class RetryAll(RetryBase):
    """Retry when all of ``retries`` say so (``a & b``)."""

    retries: tuple[Retry, ...]

    def __init__(self, *retries: Retry) -> None:
        object.__setattr__(self, "retries", retries)

    def __call__(self, state: RetryState) -> bool:
        """Return whether every strategy retries."""
        return all(retry(state) for retry in self.retries)


@dataclass(frozen=True)
class RetryIf(RetryBase):
    """Retry when ``predicate(state.exception)`` is true.

    :param predicate: e.g. :func:`~flask_safe_migrate.core.disconnects.is_retryable`
        or :func:`~flask_safe_migrate.core.disconnects.is_disconnect`.
    """

    predicate: t.Callable[[BaseException], bool]

    def __call__(self, state: RetryState) -> bool:
        """Return ``predicate(state.exception)``."""
        return self.predicate(state.exception)


@dataclass(frozen=True)
class RetryNever(RetryBase):
    """Never retry: every error propagates unchanged."""

    def __call__(self, state: RetryState) -> bool:
        """Return ``False``."""
        return False


@dataclass(frozen=True)
class RetryAlways(RetryBase):
    """Retry every :class:`Exception`; only the stop strategy ends the attempts."""

    def __call__(self, state: RetryState) -> bool:
        """Return ``True``."""
        return True


# -- policy -------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryStats:
    """What one :meth:`RetryPolicy.call` took to succeed.

    :param attempts: attempts made, the successful one included.
    :param elapsed_seconds: time from the start of the first attempt to the end of the
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


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET: t.Final = _Unset.UNSET
_UnsetType: t.TypeAlias = t.Literal[_Unset.UNSET]

_DEFAULT_STOP: t.Final = StopAfterAttempt(10)
_DEFAULT_WAIT: t.Final = WaitExponentialFullJitter()
_DEFAULT_RETRY: t.Final = RetryIf(is_retryable)


class RetryPolicy:
    """Run a callable again while it fails with a retryable error.

    The policy holds only its strategies, so it is safe to share between threads;
    everything about one run lives in :meth:`call`'s locals and its :class:`RetryStats`.

    :param stop: when to give up; 10 attempts by default.
    :param wait: the sleep before each retry; exponential with full jitter by default.
    :param retry: which errors to retry; those of
        :func:`~flask_safe_migrate.core.disconnects.is_retryable` by default.
    :param before_sleep: a hook called with the state before each sleep, e.g.
        :func:`log_before_sleep`.
    :param sleep: the sleep function; tests pass a fake.
    :param clock: the monotonic clock, in seconds; tests pass a fake.
    """

    __slots__ = ("before_sleep", "clock", "retry", "sleep", "stop", "wait")

    def __init__(
        self,
        *,
        stop: Stop = _DEFAULT_STOP,
        wait: Wait = _DEFAULT_WAIT,
        retry: Retry = _DEFAULT_RETRY,
        before_sleep: t.Callable[[RetryState], None] | None = None,
        sleep: t.Callable[[float], None] = time.sleep,
        clock: t.Callable[[], float] = time.monotonic,
    ) -> None:
        self.stop = stop
        self.wait = wait
        self.retry = retry
        self.before_sleep = before_sleep
        self.sleep = sleep
        self.clock = clock

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(stop={self.stop!r}, wait={self.wait!r}, "
            f"retry={self.retry!r}, before_sleep={self.before_sleep!r})"
        )

    def call(
        self, fn: t.Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> tuple[_R, RetryStats]:
        """Call ``fn(*args, **kwargs)``, retrying it as the strategies decide.

        After a failed attempt: an error that is not an :class:`Exception`
        (``KeyboardInterrupt``, ``SystemExit``) propagates at once; an error the retry
        strategy declines propagates unchanged, with its own traceback. Otherwise the
        wait strategy picks the sleep, and the stop strategy, seeing it, may give up.
        The policy never sleeps after the last attempt.

        :param fn: the whole unit to retry, e.g. one step attempt in its own
            transaction; never one statement inside a broken transaction.
        :raises RetryExhaustedError: when the stop strategy gives up; its
            ``last_exception`` (also ``__cause__``) is the last attempt's error.
        :returns: ``fn``'s result and the :class:`RetryStats` of the run.
        """
        start = self.clock()
        errors: list[str] = []
        sleeps: list[float] = []
        attempt = 0
        while True:
            attempt += 1
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                state = RetryState(
                    attempt=attempt,
                    elapsed_seconds=self.clock() - start,
                    exception=exc,
                )
                if not self.retry(state):
                    raise
                description = describe_error(exc)
                errors.append(description)
                state = dataclasses.replace(
                    state, next_sleep_seconds=max(0.0, self.wait(state))
                )
                if self.stop(state):
                    raise RetryExhaustedError(
                        f"gave up after {attempt} attempt(s) in "
                        f"{state.elapsed_seconds:.1f}s: {description}",
                        attempts=attempt,
                        elapsed_seconds=state.elapsed_seconds,
                        last_exception=exc,
                    ) from exc
                if self.before_sleep is not None:
                    self.before_sleep(state)
                self.sleep(state.next_sleep_seconds)
                sleeps.append(state.next_sleep_seconds)
            else:
                return result, RetryStats(
                    attempts=attempt,
                    elapsed_seconds=self.clock() - start,
                    slept_seconds=sum(sleeps),
                    errors=tuple(errors),
                    sleeps=tuple(sleeps),
                )

    def wrap(self, fn: t.Callable[_P, _R]) -> t.Callable[_P, _R]:
        """Return ``fn`` retried under this policy, with its signature and metadata.

        Use it as a decorator (``@policy.wrap``). The :class:`RetryStats` are dropped;
        use :meth:`call` to get them.

        :param fn: the function to retry.
        :returns: a wrapper that calls :meth:`call` and returns ``fn``'s result.
        """

        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            result, _ = self.call(fn, *args, **kwargs)
            return result

        return wrapper

    def copy(
        self,
        *,
        stop: Stop | _UnsetType = _UNSET,
        wait: Wait | _UnsetType = _UNSET,
        retry: Retry | _UnsetType = _UNSET,
        before_sleep: t.Callable[[RetryState], None] | _UnsetType | None = _UNSET,
        sleep: t.Callable[[float], None] | _UnsetType = _UNSET,
        clock: t.Callable[[], float] | _UnsetType = _UNSET,
    ) -> RetryPolicy:
        """Return a new policy with the given arguments changed and the rest kept.

        ``before_sleep=None`` removes the hook.

        :returns: the new policy; this one is unchanged.
        """
        return RetryPolicy(
            stop=self.stop if stop is _UNSET else stop,
            wait=self.wait if wait is _UNSET else wait,
            retry=self.retry if retry is _UNSET else retry,
            before_sleep=(
                self.before_sleep if before_sleep is _UNSET else before_sleep
            ),
            sleep=self.sleep if sleep is _UNSET else sleep,
            clock=self.clock if clock is _UNSET else clock,
        )


# -- hooks and defaults -------------------------------------------------------------


def log_before_sleep(
    logger: logging.Logger, level: int = logging.WARNING
) -> t.Callable[[RetryState], None]:
    """Return a ``before_sleep`` hook that logs each retry on ``logger``.

    One line per retry: the attempt, the error, its
    :class:`~flask_safe_migrate.core.disconnects.ErrorKind`, its SQLSTATE (``-`` when
    it has none) and the coming sleep.

    :param logger: where to log.
    :param level: the level; WARNING by default, as every retry is worth seeing.
    :returns: the hook.
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


def chain_hooks(
    *hooks: t.Callable[[RetryState], None] | None,
) -> t.Callable[[RetryState], None]:
    """Return one hook that calls each of ``hooks`` in order, skipping ``None``.

    :param hooks: the hooks, e.g. :func:`log_before_sleep` and a metrics counter.
    :returns: the combined hook.
    """
    present = tuple(hook for hook in hooks if hook is not None)

    def hook(state: RetryState) -> None:
        for each in present:
            each(state)

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
    """Return the policy the runner uses, from the ``SAFE_MIGRATE_RETRY_*`` settings.

    It stops after ``max_attempts`` or at the ``max_elapsed_seconds`` deadline,
    whichever comes first, and waits with exponential backoff and full jitter
    (doubling from ``backoff_seconds``, capped at ``backoff_max_seconds``).

    :param max_attempts: total attempts, the first one included.
    :param backoff_seconds: the upper bound of the first sleep.
    :param backoff_max_seconds: the cap on the upper bound of one sleep.
    :param max_elapsed_seconds: the total deadline; ``None`` for none.
    :param retry: which errors to retry; those of
        :func:`~flask_safe_migrate.core.disconnects.is_retryable` by default.
    :param before_sleep: a hook called before each sleep.
    :param sleep: the sleep function.
    :param clock: the monotonic clock.
    :param rng: the random generator of the jitter.
    :raises ValueError: if a value is out of range.
    :returns: the policy.
    """
    stop: Stop = StopAfterAttempt(max_attempts)
    if max_elapsed_seconds is not None:
        stop = StopAny(stop, StopAfterElapsed(max_elapsed_seconds))
    return RetryPolicy(
        stop=stop,
        wait=WaitExponentialFullJitter(backoff_seconds, backoff_max_seconds, rng=rng),
        retry=RetryIf(is_retryable) if retry is None else retry,
        before_sleep=before_sleep,
        sleep=sleep,
        clock=clock,
    )
