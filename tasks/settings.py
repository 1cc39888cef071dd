"""Every setting of the workers, read from the environment once, in one frozen object.

The names are public (the README lists them). A web process that only queues tasks needs
none of the ``KRAKEN_API_*`` variables; a worker refuses to start without a usable secret.
The secret is kept out of ``repr`` and is never put into Celery's configuration.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from kraken.pay import DEFAULT_BASE_URL, Credentials
from kraken.pay.errors import ConfigurationError
from kraken.pay.ratelimit import STARTER_CAPACITY, STARTER_PER_SECOND

__all__ = ["DEFAULT_REDIS_URL", "MAX_BULK_CHUNK", "Settings", "get_settings"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MAX_BULK_CHUNK = 5000  # ids in one broker message, whatever KRAKEN_BULK_CHUNK says

# How much longer than the client's own worst case one attempt may take before `run()` gives
# up on it, and how far the task time limits sit above that.
_ATTEMPT_SLACK = 10.0
_SOFT_LIMIT_SLACK = 5.0
_HARD_LIMIT_SLACK = 15.0


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(value) or value <= minimum:
        raise ConfigurationError(f"{name}: must be a number above {minimum:g}, not {raw!r}")
    return value


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: must be a whole number, not {raw!r}") from None
    if value < 1:
        raise ConfigurationError(f"{name}: must be at least 1, not {raw!r}")
    return value


def _rate(env: Mapping[str, str]) -> float | None:
    """KRAKEN_RATE_PER_SECOND: calls per second, or ``None`` for "off" (or 0)."""
    raw = env.get("KRAKEN_RATE_PER_SECOND", "").strip().lower()
    if raw in ("off", "0", "0.0"):
        return None
    return _number(env, "KRAKEN_RATE_PER_SECOND", STARTER_PER_SECOND)


def _capacity(env: Mapping[str, str]) -> float:
    capacity = _number(env, "KRAKEN_RATE_CAPACITY", float(STARTER_CAPACITY))
    if capacity < 1:
        raise ConfigurationError(f"KRAKEN_RATE_CAPACITY: must be at least 1 call, not {capacity:g}")
    return capacity


def _chunk(env: Mapping[str, str]) -> int:
    chunk = _integer(env, "KRAKEN_BULK_CHUNK", 1000)
    if chunk > MAX_BULK_CHUNK:
        raise ConfigurationError(
            f"KRAKEN_BULK_CHUNK: must be at most {MAX_BULK_CHUNK} ids per message, not {chunk}"
        )
    return chunk


def _sweep(env: Mapping[str, str]) -> str:
    target = env.get("KRAKEN_PAY_SWEEP", "").strip()
    module, sep, function = target.partition(":")
    if target and not (module and sep and function):
        raise ConfigurationError(
            f"KRAKEN_PAY_SWEEP: must be 'module:function', such as 'shop.sweeps:abandoned', "
            f"not {target!r}"
        )
    return target


@dataclass(frozen=True)
class Settings:
    """The worker's configuration; each field names its environment variable and default."""

    # KRAKEN_API_KEY / KRAKEN_API_SECRET: required by workers, never by web processes.
    api_key: str = field(default="", repr=False)
    api_secret: str = field(default="", repr=False)
    # KRAKEN_API_URL: where the private API lives (the simulator's URL in tests and the demo).
    api_url: str = DEFAULT_BASE_URL
    # REDIS_URL: nonces, ordering locks and rate budgets; shared by every worker of a key.
    redis_url: str = DEFAULT_REDIS_URL
    # CELERY_BROKER_URL / CELERY_RESULT_BACKEND: default to REDIS_URL.
    broker_url: str = DEFAULT_REDIS_URL
    result_backend: str = DEFAULT_REDIS_URL
    # KRAKEN_ORDERING: "serial" (a per-key lock, no nonce is ever rejected) or "window".
    ordering: Literal["serial", "window"] = "serial"
    # KRAKEN_TIMEOUT: seconds the client waits for one HTTP answer.
    timeout: float = 10.0
    # KRAKEN_RETRY_*: see tasks/retry.py.
    retry_base_delay: float = 1.0
    retry_max_delay: float = 300.0
    retry_max_attempts: int = 10
    retry_deadline: float = 3600.0
    # CELERY_VISIBILITY_TIMEOUT: seconds before Redis hands an unacknowledged task to another
    # worker. Must exceed the longest retry delay plus the task time limit.
    visibility_timeout: float = 900.0
    # CELERY_TASK_SOFT_TIME_LIMIT / CELERY_TASK_TIME_LIMIT: default to a margin above the
    # longest one attempt can take (see attempt_timeout).
    soft_time_limit: float | None = None
    time_limit: float | None = None
    # CELERY_RESULT_EXPIRES: seconds a task result is kept in the result backend.
    result_expires: float = 86400.0
    # KRAKEN_RATE_CAPACITY / KRAKEN_RATE_PER_SECOND: the rate budget every worker of a key
    # shares (kraken/pay/ratelimit.py); Kraken's Starter tier by default. KRAKEN_RATE_PER_SECOND
    # "off" or 0 turns it off (then rate_per_second is None).
    rate_capacity: float = float(STARTER_CAPACITY)
    rate_per_second: float | None = STARTER_PER_SECOND
    # KRAKEN_RATE_MAX_WAIT: seconds a call may wait for the budget; longer raises RateLimited,
    # which the task retries later instead of holding the worker.
    rate_max_wait: float = 10.0
    # KRAKEN_BULK_CHUNK: ids per bulk_cancel chunk message (at most MAX_BULK_CHUNK).
    bulk_chunk: int = 1000
    # KRAKEN_BULK_CONCURRENCY: cancels in flight per chunk, on the worker's event loop.
    bulk_concurrency: int = 8
    # KRAKEN_SCHEDULE_INTERVAL: seconds between two beat dispatches of due cancellations.
    schedule_interval: float = 1.0
    # KRAKEN_PAY_SWEEP: "module:function" of yours returning ids to cancel; beat calls it
    # every KRAKEN_PAY_SWEEP_INTERVAL seconds and bulk-cancels what it returns.
    sweep: str = ""
    sweep_interval: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        redis_url = _text(env, "REDIS_URL", DEFAULT_REDIS_URL)
        broker_url = _text(env, "CELERY_BROKER_URL", redis_url)
        ordering = _text(env, "KRAKEN_ORDERING", "serial").lower()
        if ordering not in ("serial", "window"):
            raise ConfigurationError(
                f"KRAKEN_ORDERING: must be 'serial' or 'window', not {ordering!r}"
            )
        settings = cls(
            api_key=env.get("KRAKEN_API_KEY", "").strip(),
            api_secret=env.get("KRAKEN_API_SECRET", "").strip(),
            api_url=_text(env, "KRAKEN_API_URL", DEFAULT_BASE_URL),
            redis_url=redis_url,
            broker_url=broker_url,
            result_backend=_text(env, "CELERY_RESULT_BACKEND", redis_url),
            ordering=ordering,  # type: ignore[arg-type]
            timeout=_number(env, "KRAKEN_TIMEOUT", 10.0),
            retry_base_delay=_number(env, "KRAKEN_RETRY_BASE_DELAY", 1.0),
            retry_max_delay=_number(env, "KRAKEN_RETRY_MAX_DELAY", 300.0),
            retry_max_attempts=_integer(env, "KRAKEN_RETRY_MAX_ATTEMPTS", 10),
            retry_deadline=_number(env, "KRAKEN_RETRY_DEADLINE", 3600.0),
            visibility_timeout=_number(env, "CELERY_VISIBILITY_TIMEOUT", 900.0),
            soft_time_limit=_number(env, "CELERY_TASK_SOFT_TIME_LIMIT", 0.0) or None,
            time_limit=_number(env, "CELERY_TASK_TIME_LIMIT", 0.0) or None,
            result_expires=_number(env, "CELERY_RESULT_EXPIRES", 86400.0),
            rate_capacity=_capacity(env),
            rate_per_second=_rate(env),
            rate_max_wait=_number(env, "KRAKEN_RATE_MAX_WAIT", 10.0),
            bulk_chunk=_chunk(env),
            bulk_concurrency=_integer(env, "KRAKEN_BULK_CONCURRENCY", 8),
            schedule_interval=_number(env, "KRAKEN_SCHEDULE_INTERVAL", 1.0),
            sweep=_sweep(env),
            sweep_interval=_number(env, "KRAKEN_PAY_SWEEP_INTERVAL", 300.0),
        )
        settings.task_time_limits()  # refuse inconsistent limits now, not in the worker
        return settings

    def credentials(self) -> Credentials:
        """The validated credentials; errors name the variable, never the value."""
        if not self.api_key:
            raise ConfigurationError("KRAKEN_API_KEY: is not set (the worker needs the API key)")
        if not self.api_secret:
            raise ConfigurationError(
                "KRAKEN_API_SECRET: is not set (the worker needs the key's private secret)"
            )
        try:
            return Credentials(self.api_key, self.api_secret)
        except ConfigurationError as exc:
            rule = str(exc).partition(": ")[2] or str(exc)
            variable = "KRAKEN_API_KEY" if str(exc).startswith("api_key") else "KRAKEN_API_SECRET"
            raise ConfigurationError(f"{variable}: {rule}") from None

    @property
    def attempt_timeout(self) -> float:
        """The longest one call may take: the rate budget's wait, the ordering lock's wait,
        the request, one re-sign.

        The client waits for the per-key lock up to four times its lifetime (timeout + 2 s)
        and may send twice in window mode; ``run()`` waits a little longer than all of that.
        """
        budget_wait = self.rate_max_wait if self.rate_per_second else 0.0
        return budget_wait + 4 * (self.timeout + 2.0) + 2 * self.timeout + _ATTEMPT_SLACK

    def task_time_limits(self) -> tuple[float, float]:
        """(soft, hard) task time limits in seconds: above the client's timeouts by default."""
        soft = self.soft_time_limit or self.attempt_timeout + _SOFT_LIMIT_SLACK
        hard = self.time_limit or max(soft, self.attempt_timeout) + _HARD_LIMIT_SLACK
        if soft <= self.timeout:
            raise ConfigurationError(
                f"CELERY_TASK_SOFT_TIME_LIMIT: must be above KRAKEN_TIMEOUT ({self.timeout:g}s), "
                f"not {soft:g}"
            )
        if hard <= soft:
            raise ConfigurationError(
                f"CELERY_TASK_TIME_LIMIT: must be above the soft limit ({soft:g}s), not {hard:g}"
            )
        return soft, hard


@functools.cache
def get_settings() -> Settings:
    """The settings of this process, read from the environment on first use."""
    return Settings.from_env()
