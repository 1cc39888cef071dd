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
from typing import TYPE_CHECKING

from kraken.pay.errors import RateLimited

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["STARTER_CAPACITY", "STARTER_PER_SECOND", "RateBudget"]

STARTER_CAPACITY = 15
STARTER_PER_SECOND = 0.33

log = logging.getLogger("kraken.pay.ratelimit")

# KEYS[1] TAT in microseconds. ARGV: interval_us, burst_us (capacity * interval), max_wait_us.
# Returns the microseconds to wait before sending (0: now), or -wait when the wait would be
# longer than max_wait (then nothing is reserved). Microsecond times stay below 2**53.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - burst - now
if wait < 0 then wait = 0 end
if wait > tonumber(ARGV[3]) then return -wait end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return wait
"""

# Pushes the TAT so that no worker sends before `penalty` microseconds from now.
_PENALIZE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = now + tonumber(ARGV[1]) + tonumber(ARGV[2])
if tat < floor then tat = floor end
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
    ) -> None:
        if not capacity >= 1:
            raise ValueError(f"capacity: must be at least 1 call, not {capacity!r}")
        if not per_second > 0:
            raise ValueError(f"per_second: must be a positive rate, not {per_second!r}")
        if not max_wait >= 0:
            raise ValueError(f"max_wait: must be 0 or more seconds, not {max_wait!r}")
        if not headroom >= 0:
            raise ValueError(f"headroom: must be 0 or more calls, not {headroom!r}")
        self.key_id = key_id
        self.capacity = capacity
        self.per_second = per_second
        self.max_wait = max_wait
        self.headroom = headroom
        self.redis_key = f"{prefix}:budget:{key_id}"
        self._interval_us = round(1_000_000 / per_second)
        burst = max(1.0, capacity - headroom)  # calls that may go at once
        self._burst_us = round(burst * self._interval_us)
        self._reserve = redis.register_script(_RESERVE)
        self._penalize = redis.register_script(_PENALIZE)

    async def acquire(self) -> float:
        """Reserve the next slot and sleep until it; return the seconds waited."""
        args = [self._interval_us, self._burst_us, round(self.max_wait * 1_000_000)]
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
        """Kraken refused a call for rate: hold every worker back (default: a full refill)."""
        pause = self.capacity / self.per_second if seconds is None else seconds
        # The next call is allowed at TAT - burst, so push TAT to now + pause + burst.
        args = [round(pause * 1_000_000), self._burst_us]
        held_us = int(await self._penalize(keys=[self.redis_key], args=args))
        log.warning("rate limited by Kraken: key %s paused for %.1fs", self.key_id, pause)
        return held_us / 1_000_000

    def __repr__(self) -> str:
        return (
            f"RateBudget(key_id={self.key_id!r}, capacity={self.capacity}, "
            f"per_second={self.per_second})"
        )
