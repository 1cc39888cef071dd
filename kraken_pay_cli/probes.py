"""What answers: Redis, the broker, Redis's clock, each probed once with a short timeout.

``kraken-pay check`` reports every :class:`Finding`; ``cancel`` and ``bulk-cancel`` refuse at
once when the broker does not answer; the demo and the local machinery ask whether a Redis
answers before they start one.
"""

from __future__ import annotations

import time

import redis

from kraken_pay_cli.app import EXIT_FAILED, EXIT_UNREACHABLE, describe, redact

__all__ = [
    "CHECK_TIMEOUT",
    "Finding",
    "check_broker",
    "check_clock",
    "check_redis",
    "redis_answers",
]

CHECK_TIMEOUT = 3.0  # seconds each network check may take


class Finding:
    """One line of ``kraken-pay check``: what was checked, whether it is fine, and why."""

    def __init__(
        self, name: str, detail: str, failure: int | None = None, *, warning: bool = False
    ) -> None:
        self.name = name
        self.detail = detail
        self.failure = failure  # the exit status this problem means, None when all is well
        self.warning = warning and failure is None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def line(self) -> str:
        mark = "FAIL" if not self.ok else "warn" if self.warning else "ok"
        return f"{mark:<5} {self.name:<12} {self.detail}"


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a Redis answers PING at ``url`` within ``timeout`` seconds."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def check_redis(url: str, name: str = "redis") -> Finding:
    client = redis.Redis.from_url(
        url, socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT
    )
    started = time.perf_counter()
    try:
        client.ping()
    except redis.RedisError as exc:
        return Finding(name, f"{redact(url)} does not answer: {describe(exc)}", EXIT_UNREACHABLE)
    finally:
        client.close()
    return Finding(name, f"{redact(url)} answers ({_ms(started)})")


def check_broker(url: str) -> Finding:
    from kombu import Connection

    started = time.perf_counter()
    try:
        with Connection(url, connect_timeout=CHECK_TIMEOUT) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=CHECK_TIMEOUT)
            connection.default_channel  # noqa: B018 - a channel proves the broker speaks
    except Exception as exc:  # kombu raises its own and its transports' errors
        detail = f"{redact(url)} does not answer: {describe(exc)}"
        return Finding("broker", detail, EXIT_UNREACHABLE)
    return Finding("broker", f"{redact(url)} answers ({_ms(started)})")


def check_clock(url: str, max_skew: float) -> Finding:
    """Countdowns and scheduled times are set on one host and honoured on another."""
    client = redis.Redis.from_url(url, socket_timeout=CHECK_TIMEOUT)
    try:
        before = time.time()
        seconds, micros = client.time()
        after = time.time()
    except redis.RedisError as exc:
        return Finding("clock", f"cannot read Redis's clock: {describe(exc)}", EXIT_UNREACHABLE)
    finally:
        client.close()
    skew = seconds + micros / 1e6 - (before + after) / 2
    side = "behind" if skew > 0 else "ahead of"
    detail = f"this host is {abs(skew):.3f}s {side} Redis (at most {max_skew:g}s allowed)"
    return Finding("clock", detail, None if abs(skew) <= max_skew else EXIT_FAILED)


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"
