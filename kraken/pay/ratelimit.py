"""One rate budget per API key, shared by every worker through Redis.

Kraken counts private calls per key: each call adds 1 to a counter that decays at a fixed
rate, and a call over the maximum is refused with ``EAPI:Rate limit exceeded`` (Starter
tier: maximum 15, decay 0.33 per second; docs.kraken.com, "Spot REST Rate Limits"). That is
a leaky bucket, which GCRA models exactly with one number per key: the theoretical arrival
time (TAT) of the next call. One Lua script on Redis's clock reserves a slot atomically,
so workers on any host queue fairly without polling.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

from kraken.pay.errors import DEFAULT_MAX_RETRY_AFTER, RateLimited

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["STARTER_CAPACITY", "STARTER_PER_SECOND", "RateBudget"]

STARTER_CAPACITY = 15
STARTER_PER_SECOND = 0.33

log = logging.getLogger("kraken.pay.ratelimit")

# KEYS[1] TAT in microseconds. ARGV: interval_us, burst_us (capacity * interval), max_wait_us,
# horizon_us. Returns the microseconds to wait before sending (0: now), or -wait when the wait
# would be longer than max_wait (then nothing is reserved). Microsecond times stay below 2**53.
# A TAT beyond the horizon (written by a client without one) is read as the horizon.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat > now + tonumber(ARGV[4]) then tat = now + tonumber(ARGV[4]) end
local new_tat = tat + interval
local wait = new_tat - burst - now
if wait < 0 then wait = 0 end
if wait > tonumber(ARGV[3]) then return -wait end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return wait
"""

# Pushes the TAT so that no worker sends before `penalty` microseconds from now.
# ARGV: penalty_us, burst_us, horizon_us; the TAT never ends up beyond the horizon.
_PENALIZE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = now + tonumber(ARGV[1]) + tonumber(ARGV[2])
if tat < floor then tat = floor end
if tat > now + tonumber(ARGV[3]) then tat = now + tonumber(ARGV[3]) end
local ttl_ms = math.ceil((tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl_ms)
return tat - now
"""


class RateBudget:
    """Calls per key: at most ``capacity`` at once, refilled at ``per_second``.

    ``acquire()`` waits (asynchronously) for a slot; a wait above ``max_wait`` raises
    :class:`~kraken.pay.errors.RateLimited` with ``retry_after`` instead, for a task to retry
    later rather than hold a worker.

    ``headroom`` calls of the burst are kept in reserve: a call reaches Kraken some
    milliseconds after its slot, and when an early call is delayed more than a later one,
    Kraken's counter sees them closer together than we spaced them. One call of headroom
    absorbs a difference in delay of up to one interval (3 s at the Starter tier's rate).

    ``max_pause`` bounds how far ``penalize`` holds the key back, whatever a ``Retry-After``
    says; the budget is never booked further ahead than that plus one burst.
    """

    def __init__(
        self,
        redis: Redis,
        key_id: str,
        *,
        capacity: float = STARTER_CAPACITY,
        per_second: float = STARTER_PER_SECOND,
        max_wait: float = 10.0,
        headroom: float = 1.0,
        prefix: str = "kraken",
        max_pause: float = DEFAULT_MAX_RETRY_AFTER,
    ) -> None:
        _check("capacity", capacity, capacity >= 1, "at least 1 call")
        _check("per_second", per_second, per_second > 0, "a positive rate")
        _check("max_wait", max_wait, max_wait >= 0, "0 or more seconds")
        _check("headroom", headroom, headroom >= 0, "0 or more calls")
        _check("max_pause", max_pause, max_pause >= 0, "0 or more seconds")
        self.key_id = key_id
        self.capacity = capacity
        self.per_second = per_second
        self.max_wait = max_wait
        self.headroom = headroom
        self.max_pause = max_pause
        self.redis_key = f"{prefix}:budget:{key_id}"
        self._interval_us = round(1_000_000 / per_second)
        burst = max(1.0, capacity - headroom)  # calls that may go at once
        self._burst_us = round(burst * self._interval_us)
        ahead = max(max_pause, max_wait) * 1_000_000 + self._interval_us
        self._horizon_us = self._burst_us + round(ahead)  # the furthest a TAT is booked
        self._reserve = redis.register_script(_RESERVE)
        self._penalize = redis.register_script(_PENALIZE)

    async def acquire(self) -> float:
        """Reserve the next slot and sleep until it; return the seconds waited."""
        max_wait_us = round(self.max_wait * 1_000_000)
        args = [self._interval_us, self._burst_us, max_wait_us, self._horizon_us]
        wait_us = int(await self._reserve(keys=[self.redis_key], args=args))
        if wait_us < 0:
            retry_after = -wait_us / 1_000_000
            raise RateLimited(
                f"shared rate budget for key {self.key_id!r} is spent for {retry_after:.1f}s",
                retry_after=retry_after,
            )
        if wait_us:
            await asyncio.sleep(wait_us / 1_000_000)
        return wait_us / 1_000_000

    async def penalize(self, seconds: float | None = None) -> float:
        """Kraken refused a call for rate: hold every worker back (default: a full refill).

        The pause is at most ``max_pause``; NaN or ``None`` mean the default.
        """
        if seconds is None or math.isnan(seconds):
            seconds = self.capacity / self.per_second
        pause = min(max(seconds, 0.0), self.max_pause)
        # The next call is allowed at TAT - burst, so push TAT to now + pause + burst.
        args = [round(pause * 1_000_000), self._burst_us, self._horizon_us]
        held_us = int(await self._penalize(keys=[self.redis_key], args=args))
        log.warning("rate limited by Kraken: key %s paused for %.1fs", self.key_id, pause)
        return held_us / 1_000_000

    def __repr__(self) -> str:
        return (
            f"RateBudget(key_id={self.key_id!r}, capacity={self.capacity}, "
            f"per_second={self.per_second})"
        )


def _check(name: str, value: float, ok: bool, rule: str) -> None:
    if not (ok and math.isfinite(value)):
        raise ValueError(f"{name}: must be {rule}, finite, not {value!r}")
