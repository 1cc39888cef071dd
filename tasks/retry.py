"""What is retried, after how long, and when to give up: the whole policy on one screen.

* Transient errors (:class:`kraken.TransientError`) retry; everything else does not.
* The delay before retry ``n`` (0 for the first retry) is full jitter,
  ``uniform(0, min(max_delay, base * 2**n))``, where ``base`` is the error's multiple of
  ``base_delay`` (table below), then at least the error's floor and Kraken's ``Retry-After``,
  then at most ``max_delay``.
* A task gives up after ``max_attempts`` attempts, or when the next attempt would start after
  ``deadline`` seconds from the first one.
* ``max_delay`` plus the task time limit must stay below the broker's visibility timeout: a
  task that waits for its retry is unacknowledged all that time, and Redis would hand it to a
  second worker. :func:`check_visibility` refuses such a configuration when a worker starts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from kraken.pay import (
    ConfigurationError,
    InvalidNonce,
    KrakenError,
    RateLimited,
    ServiceUnavailable,
    TemporaryLockout,
    TransientError,
    TransportError,
)

__all__ = ["BACKOFF", "Backoff", "RetriesExhausted", "RetryPolicy", "check_visibility"]


@dataclass(frozen=True)
class Backoff:
    """How patient to be with one kind of error, in multiples of the policy's base delay."""

    base: float  # the first retry waits up to base * base_delay, doubling on each retry
    floor: float = 0.0  # never wait less than floor * base_delay


# Most specific first; the first class that matches decides.
BACKOFF: tuple[tuple[type[KrakenError], Backoff], ...] = (
    # The client already re-signed once at once (window mode); in serial mode it should not
    # happen at all. A fresh nonce is all it takes, so retry soon.
    (InvalidNonce, Backoff(base=0.2)),
    # Kraken locks the key for about 15 minutes: pause long, and do not hammer it.
    (TemporaryLockout, Backoff(base=60.0, floor=30.0)),
    # Slow down; Kraken's Retry-After, when sent, is a floor on top of this.
    (RateLimited, Backoff(base=5.0, floor=1.0)),
    (ServiceUnavailable, Backoff(base=2.0)),
    # Connection refused or reset, timeouts, 5xx, unreadable bodies.
    (TransportError, Backoff(base=1.0)),
    (TransientError, Backoff(base=1.0)),
)

# A countdown must leave this much of the visibility timeout for the retried task to run.
VISIBILITY_MARGIN = 1.0


@dataclass(frozen=True)
class RetryPolicy:
    """Retry numbers; the defaults are the ``KRAKEN_RETRY_*`` defaults."""

    max_attempts: int = 10  # KRAKEN_RETRY_MAX_ATTEMPTS: attempts in all, the first included
    base_delay: float = 1.0  # KRAKEN_RETRY_BASE_DELAY: seconds, scales the table above
    max_delay: float = 300.0  # KRAKEN_RETRY_MAX_DELAY: no countdown is longer
    deadline: float = 3600.0  # KRAKEN_RETRY_DEADLINE: no retry starts later after the first

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("KRAKEN_RETRY_MAX_ATTEMPTS: must be at least 1")
        if not (self.base_delay > 0 and self.max_delay > 0 and self.deadline > 0):
            raise ConfigurationError("KRAKEN_RETRY_*: delays and the deadline must be positive")

    @classmethod
    def from_settings(cls, settings: Any) -> RetryPolicy:
        return cls(
            max_attempts=settings.retry_max_attempts,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
            deadline=settings.retry_deadline,
        )

    def delay(self, exc: KrakenError, retry: int, rand: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based) after ``exc``."""
        backoff = _backoff_for(exc)
        window = min(self.max_delay, backoff.base * self.base_delay * 2**retry)
        countdown = (rand or random).uniform(0.0, window)
        floor = max(backoff.floor * self.base_delay, getattr(exc, "retry_after", None) or 0.0)
        return min(self.max_delay, max(countdown, floor))

    def decide(
        self,
        exc: BaseException,
        attempt: int,
        elapsed: float,
        rand: random.Random | None = None,
    ) -> float | None:
        """After attempt number ``attempt`` (1-based) failed with ``exc``, ``elapsed`` seconds
        after the first attempt began: the countdown before the next one, or ``None`` to stop.
        """
        if not is_transient(exc):
            return None
        if attempt >= self.max_attempts:
            return None
        countdown = self.delay(exc, attempt - 1, rand)  # type: ignore[arg-type]
        if elapsed + countdown > self.deadline:
            return None
        return countdown


def is_transient(exc: BaseException) -> bool:
    """Whether the same call may succeed later."""
    return isinstance(exc, TransientError)


def _backoff_for(exc: KrakenError) -> Backoff:
    for cls, backoff in BACKOFF:
        if isinstance(exc, cls):
            return backoff
    return Backoff(base=1.0)


def check_visibility(policy: RetryPolicy, visibility_timeout: float, time_limit: float) -> None:
    """Refuse a retry cap that would make Redis deliver a waiting task a second time."""
    needed = policy.max_delay + time_limit + VISIBILITY_MARGIN
    if visibility_timeout < needed:
        raise ConfigurationError(
            f"CELERY_VISIBILITY_TIMEOUT: {visibility_timeout:g}s is too short: it must exceed "
            f"KRAKEN_RETRY_MAX_DELAY ({policy.max_delay:g}s) plus the task time limit "
            f"({time_limit:g}s) plus {VISIBILITY_MARGIN:g}s, or a task waiting for its retry "
            f"would be delivered twice; raise it to at least {needed:g} or lower "
            "KRAKEN_RETRY_MAX_DELAY"
        )


class RetriesExhausted(Exception):
    """The request could not be cancelled: every attempt failed with a transient error.

    Its arguments are JSON (external id, attempts, the last Kraken error as a dict), so it
    survives Celery's JSON result backend and is rebuilt on the caller's side.
    """

    def __init__(
        self, external_id: str, attempts: int, last_error: dict[str, Any] | None = None
    ) -> None:
        super().__init__(external_id, attempts, last_error or {})
        self.external_id = external_id
        self.attempts = attempts
        self.last_error = last_error or {}

    def __str__(self) -> str:
        last = self.last_error
        what = last.get("error", "an error")
        message = last.get("message")
        return (
            f"cancel_request({self.external_id}) gave up after {self.attempts} attempt(s); "
            f"last error: {what}" + (f": {message}" if message else "")
        )
