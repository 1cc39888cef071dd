"""Nonces that only ever go up, for one API key shared by many processes and hosts.

Kraken rejects a nonce that is not above the last one it accepted for the key, and counts
rejections towards a lockout. :class:`RedisNonce` draws every nonce from one atomic Lua
script on Redis's own clock, so all workers share one sequence; :class:`ClockNonce` serves
a single process without Redis.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from redis.exceptions import LockError, RedisError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio import Redis

__all__ = ["ClockNonce", "NonceSource", "RedisNonce", "Unit"]

Unit = Literal["ns", "us", "ms"]

# Redis TIME gives seconds and microseconds as decimal strings. The nonce is built and
# compared as a decimal string, and incremented with INCRBY on the stored value, so it
# stays exact above 2**53 where Lua's numbers (doubles) would round. ARGV[2] nonces are
# reserved at once (the stored value is the last of them); the first is returned.
_NEXT_NONCES = """
local t = redis.call('TIME')
local unit = ARGV[1]
local now
if unit == 'ns' then
  now = t[1] .. string.format('%06d', tonumber(t[2])) .. '000'
elseif unit == 'us' then
  now = t[1] .. string.format('%06d', tonumber(t[2]))
else
  now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end
redis.call('INCRBY', KEYS[1], 1)
local first = redis.call('GET', KEYS[1])
if string.len(now) > string.len(first)
   or (string.len(now) == string.len(first) and now > first) then
  redis.call('SET', KEYS[1], now)
  first = now
end
local count = tonumber(ARGV[2])
if count > 1 then
  redis.call('INCRBY', KEYS[1], count - 1)
end
return first
"""

_SCALE = {"ns": 1, "us": 1_000, "ms": 1_000_000}


@runtime_checkable
class NonceSource(Protocol):
    """Where a client gets its nonces, and the lock that keeps them in order on the wire."""

    key_id: str

    async def next(self) -> int:
        """Return a nonce above every nonce this source has handed out for the key."""
        ...

    def ordering_lock(self, timeout: float) -> AbstractAsyncContextManager[None]:
        """A lock held from drawing a nonce until its response, so calls reach Kraken in order.

        ``timeout`` bounds how long a holder that died can keep it.
        """
        ...


class RedisNonce:
    """Nonces for one API key from one Redis, shared by every process that uses that Redis.

    ``max(last + 1, now)`` with ``now`` from Redis ``TIME``: one clock for all hosts, and
    after a restart or ``FLUSHDB`` the next value is still above every earlier one.
    """

    def __init__(
        self, redis: Redis, key_id: str, unit: Unit = "ns", *, prefix: str = "kraken"
    ) -> None:
        if unit not in _SCALE:
            raise ValueError(f"unit: must be one of 'ns', 'us', 'ms', not {unit!r}")
        if not key_id:
            raise ValueError("key_id: must be a non-empty name for the API key")
        self.redis = redis
        self.key_id = key_id
        self.unit = unit
        self.redis_key = f"{prefix}:nonce:{key_id}"
        self.lock_key = f"{prefix}:nonce-lock:{key_id}"
        self._script = redis.register_script(_NEXT_NONCES)
        self._local_lock = asyncio.Lock()
        self._waiting: list[asyncio.Future[int]] = []
        self._drawer: asyncio.Future[None] | None = None

    async def next(self) -> int:
        """One nonce; concurrent callers in this process share one script call (window mode)."""
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        if self._drawer is None or self._drawer.done():
            self._drawer = asyncio.ensure_future(self._draw_for_waiters())
        return await waiter

    async def _draw_for_waiters(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                first = await self.draw(len(batch))
            except Exception as exc:
                for waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            # A cancelled waiter's nonce is skipped: a gap is harmless, a repeat is not.
            for offset, waiter in enumerate(batch):
                if not waiter.done():
                    waiter.set_result(first + offset)

    async def draw(self, count: int = 1) -> int:
        """Reserve ``count`` consecutive nonces in one atomic script; return the first."""
        return int(await self._script(keys=[self.redis_key], args=[self.unit, count]))

    @asynccontextmanager
    async def ordering_lock(self, timeout: float) -> AsyncIterator[None]:
        # Coroutines of this process queue on an asyncio lock first, so only one of them
        # at a time polls Redis for the shared lock.
        async with self._local_lock:
            lock = self.redis.lock(
                self.lock_key, timeout=timeout, sleep=0.002, blocking_timeout=timeout * 4
            )
            if not await lock.acquire():
                raise LockError(f"ordering lock for key {self.key_id!r} not free in time")
            try:
                yield
            finally:
                # A holder that outlived `timeout` lost the lock already; that is not an error
                # of this call, and an unreachable Redis frees it by expiry.
                with suppress(LockError, RedisError):
                    await lock.release()

    def __repr__(self) -> str:
        return f"RedisNonce(key_id={self.key_id!r}, unit={self.unit!r})"


class ClockNonce:
    """Nonces from this process's clock, for one process that owns the key alone."""

    def __init__(self, unit: Unit = "ns", key_id: str = "local") -> None:
        if unit not in _SCALE:
            raise ValueError(f"unit: must be one of 'ns', 'us', 'ms', not {unit!r}")
        self.key_id = key_id
        self.unit = unit
        self._last = 0
        self._lock = asyncio.Lock()

    async def next(self) -> int:
        now = time.time_ns() // _SCALE[self.unit]
        self._last = max(self._last + 1, now)
        return self._last

    def ordering_lock(self, timeout: float) -> AbstractAsyncContextManager[None]:
        return self._lock

    def __repr__(self) -> str:
        return f"ClockNonce(unit={self.unit!r})"
