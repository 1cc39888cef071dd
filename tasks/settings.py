"""The library's settings, resolved lazily for the Celery app that runs the tasks.

Each setting is looked up key by key: first in the running app's ``app.conf.kraken_pay``
dict (in Django, ``CELERY_KRAKEN_PAY = {...}`` with ``namespace="CELERY"``; in Flask,
``CELERY = {"kraken_pay": {...}}``), then in the environment. A dict key is its variable's
name without ``KRAKEN_`` in lower case (``timeout`` for ``KRAKEN_TIMEOUT``, ``redis_url`` for
``REDIS_URL``). Nothing is read at import: a worker resolves them when it starts, a web
process at its first call. A bad value is one :class:`ConfigurationError` line naming the
setting and the rule, never the value (it may be a secret put in the wrong place).
"""

from __future__ import annotations

import hmac
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kraken.pay import (
    DEFAULT_BASE_URL,
    STARTER_CAPACITY,
    STARTER_PER_SECOND,
    ConfigurationError,
    Credentials,
)
from kraken.pay.webhooks import KRAKEN_JWKS_URL
from tasks import parsing
from tasks.parsing import DEFAULT_QUEUE, DEFAULT_REDIS_URL, MAX_BULK_CHUNK

__all__ = [
    "CONF_KEY",
    "DEFAULT_QUEUE",
    "DEFAULT_REDIS_URL",
    "MAX_BULK_CHUNK",
    "Secret",
    "Settings",
    "settings_for",
]

CONF_KEY = "kraken_pay"  # app.conf.kraken_pay

# How much longer than the client's own worst case one attempt may take before `run()` gives
# up on it, and how far the task time limits sit above that.
_ATTEMPT_SLACK = 10.0
_SOFT_LIMIT_SLACK = 5.0
_HARD_LIMIT_SLACK = 15.0


class Secret:
    """A string that never shows itself: not in ``repr``, ``str``, ``vars`` or a pickle."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret(<redacted>)" if self._value else "Secret(<empty>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(Secret)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Secret is immutable")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:  # dataclasses.asdict copies
        return self

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled: the API secret must not leave the process")


@dataclass(frozen=True)
class Settings:
    """Every setting, its variable and its default; ``Settings()`` is the defaults."""

    # KRAKEN_API_KEY / KRAKEN_API_SECRET: required by workers, never by web processes.
    api_key: str = field(default="", repr=False)
    api_secret: Secret = field(default=Secret(""), repr=False)
    # KRAKEN_API_URL: where the private API lives (the simulator's URL in tests and the demo).
    api_url: str = DEFAULT_BASE_URL
    # REDIS_URL: nonces, ordering locks, rate budgets and scheduled cancellations.
    redis_url: str = DEFAULT_REDIS_URL
    # KRAKEN_REDIS_PREFIX: every Redis key of the library starts with it (nonces, turns,
    # budgets, the ledger): apps that share a Redis use prefixes of their own.
    redis_prefix: str = "kraken"
    # KRAKEN_LEDGER_GRACE: seconds after a cancellation is asked for (or re-sent) by which a
    # worker should have started on it; beat's relay re-sends it after that.
    ledger_grace: float = 120.0
    # KRAKEN_QUEUE: the one queue every task of the library goes to.
    queue: str = DEFAULT_QUEUE
    # KRAKEN_ORDERING: "serial" (a per-key turn, nonces reach Kraken in order) or "window".
    ordering: Literal["serial", "window"] = "serial"
    # KRAKEN_TIMEOUT: seconds the client waits for one HTTP answer.
    timeout: float = 10.0
    # KRAKEN_LATE_LANDING_GRACE: in serial mode, seconds the key's turn is kept after a call
    # timed out (it may still reach Kraken), so the next nonce does not overtake it.
    late_landing_grace: float = 3.0
    # KRAKEN_RETRY_*: see tasks/retry.py.
    retry_base_delay: float = 1.0
    retry_max_delay: float = 300.0
    retry_max_attempts: int = 10
    retry_deadline: float = 3600.0
    # KRAKEN_RATE_CAPACITY / KRAKEN_RATE_PER_SECOND: the rate budget every worker of a key
    # shares (kraken/pay/ratelimit.py); Kraken's Starter tier by default.
    # KRAKEN_RATE_PER_SECOND "off" or 0 turns it off (then rate_per_second is None).
    rate_capacity: float = float(STARTER_CAPACITY)
    rate_per_second: float | None = STARTER_PER_SECOND
    # KRAKEN_RATE_MAX_WAIT: seconds a call may wait for the budget before it is retried later.
    rate_max_wait: float = 10.0
    # KRAKEN_MAX_RETRY_AFTER: the longest Kraken's Retry-After may hold a call or the key's
    # budget back (inf, NaN and huge values become this); KRAKEN_MAX_RESPONSE_BYTES: the
    # largest answer the client reads (see docs/bounds.md).
    max_retry_after: float = 300.0
    max_response_bytes: int = 4 << 20
    # KRAKEN_BULK_CHUNK: ids per bulk_cancel chunk message (at most MAX_BULK_CHUNK).
    bulk_chunk: int = 1000
    # KRAKEN_BULK_CONCURRENCY: cancels in flight per chunk, on the worker's event loop.
    bulk_concurrency: int = 8
    # KRAKEN_SCHEDULE_INTERVAL: seconds between two beat dispatches of due cancellations.
    schedule_interval: float = 1.0
    # KRAKEN_PAY_SWEEP: "module:function" of yours returning ids to cancel; beat calls it
    # every KRAKEN_PAY_SWEEP_INTERVAL seconds and bulk-cancels what it returns.
    pay_sweep: str = ""
    pay_sweep_interval: float = 300.0
    # KRAKEN_SOFT_TIME_LIMIT / KRAKEN_TIME_LIMIT: the workers' time limits of one attempt;
    # by default a margin above the longest one attempt can take (see attempt_timeout).
    soft_time_limit: float | None = None
    time_limit: float | None = None
    # KRAKEN_PAY_METRICS_PORT: a worker of the queue serves Prometheus metrics on this port
    # (tasks/metrics.py); unset, none are served.
    pay_metrics_port: int | None = None
    # KRAKEN_LOG_JSON: a worker of the queue writes its log records as JSON lines.
    log_json: bool = False
    # KRAKEN_JWKS_URL: where Kraken's keys for its status notifications are (the receivers
    # verify against it; the simulator's sim.jwks_url in tests and the demo).
    jwks_url: str = KRAKEN_JWKS_URL
    # KRAKEN_CALLBACK_HOOK: "module:function" of yours, called on the worker once per distinct
    # notification with its PayCallback (see tasks/callbacks.py).
    callback_hook: str = ""

    @classmethod
    def resolve(
        cls, conf: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from ``conf`` (the app's ``kraken_pay`` dict), then ``env``."""
        conf = _checked_conf(conf)
        env = os.environ if env is None else env
        values = {spec.key: spec.read(conf, env) for spec in parsing.SPECS}
        values["api_secret"] = Secret(values["api_secret"])
        settings = cls(**values)
        settings.task_time_limits()
        return settings

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from the environment alone (the standalone fleet, the command line)."""
        return cls.resolve(None, env)

    def credentials(self) -> Credentials:
        """The validated credentials; errors name the setting, never the value."""
        if not self.api_key:
            raise ConfigurationError("KRAKEN_API_KEY: is not set (the worker needs the API key)")
        if not self.api_secret:
            raise ConfigurationError(
                "KRAKEN_API_SECRET: is not set (the worker needs the key's private secret)"
            )
        try:
            return Credentials(self.api_key, self.api_secret.reveal())
        except ConfigurationError as exc:
            rule = str(exc).partition(": ")[2] or str(exc)
            name = "KRAKEN_API_KEY" if str(exc).startswith("api_key") else "KRAKEN_API_SECRET"
            raise ConfigurationError(f"{name}: {rule}") from None

    @property
    def attempt_timeout(self) -> float:
        """The longest one call may take: the rate budget's wait, the ordering turn's wait,
        the request, one re-sign.

        The client waits for the per-key turn up to four times its lifetime (timeout + 2 s)
        and may send twice in window mode; ``run()`` waits a little longer than all of that.
        """
        budget_wait = self.rate_max_wait if self.rate_per_second else 0.0
        # Waiting for the key's turn: a few holders' calls, and one late-landing grace.
        turn_wait = 4 * (self.timeout + 2.0) + self.late_landing_grace
        return budget_wait + turn_wait + 2 * self.timeout + _ATTEMPT_SLACK

    def task_time_limits(self) -> tuple[float, float]:
        """(soft, hard) time limits of ``cancel_request``: by default above the client's own
        timeouts, so that the client's timeout, not the limit, ends a slow call."""
        soft = self.soft_time_limit or self.attempt_timeout + _SOFT_LIMIT_SLACK
        hard = self.time_limit or max(soft, self.attempt_timeout) + _HARD_LIMIT_SLACK
        if soft <= self.timeout:
            raise ConfigurationError(
                f"KRAKEN_SOFT_TIME_LIMIT: must be above KRAKEN_TIMEOUT ({self.timeout:g}s)"
            )
        if hard <= soft:
            raise ConfigurationError(
                f"KRAKEN_TIME_LIMIT: must be above the soft time limit ({soft:g}s)"
            )
        return soft, hard


def _checked_conf(conf: Any) -> Mapping[str, Any]:
    if conf is None:
        return {}
    if not isinstance(conf, Mapping):
        raise ConfigurationError(f"{CONF_KEY}: must be a dict of settings")
    known = {spec.key for spec in parsing.SPECS}
    for key in conf:
        if key not in known:
            name = key if isinstance(key, str) and len(key) <= 40 else "a key"
            raise ConfigurationError(
                f"{CONF_KEY}: unknown setting {name!r} (known: {', '.join(sorted(known))})"
            )
    return conf


_resolved: weakref.WeakKeyDictionary[Any, Settings] = weakref.WeakKeyDictionary()


def settings_for(app: Any = None) -> Settings:
    """The settings of ``app`` (default: Celery's current app), resolved on first use."""
    if app is None:
        from celery import current_app

        app = current_app._get_current_object()
    settings = _resolved.get(app)
    if settings is None:
        settings = _resolved[app] = Settings.resolve(app.conf.get(CONF_KEY))
    return settings


def override(app: Any, settings: Settings) -> None:
    """Use ``settings`` for ``app`` from now on (tests; :func:`forget` undoes it)."""
    _resolved[app] = settings


def forget(app: Any = None) -> None:
    """Drop the resolved settings of ``app`` (all apps if ``None``): tests change them."""
    if app is None:
        _resolved.clear()
    else:
        _resolved.pop(app, None)
