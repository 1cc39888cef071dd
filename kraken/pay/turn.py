"""The per-key turn that keeps serial calls in nonce order across processes and hosts.

One Lua script takes the turn and draws its nonces together, so an uncontested call costs one
round trip; another releases it and hands it, with fresh nonces, to the oldest live waiter,
who blocks on a list of its own (``BLPOP``) instead of polling. A process keeps the turn for a
short lease, bounded in time and in calls, and passes it among its own callers without Redis
until another process asks for it: the asker's failed take publishes the holder's token, and
the holder hands over after the call in flight. A dead holder frees the turn by expiry.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

from redis.exceptions import LockError, RedisError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from redis.asyncio import Redis

__all__ = ["DRAW_LUA", "Ticket", "Turn"]

log = logging.getLogger("kraken.pay.turn")

_RECHECK_SLACK_MS = 250

# draw(key, unit, count): reserve `count` nonces, return the first as a decimal string.
# Redis TIME gives seconds and microseconds as strings; the nonce is built and compared as a
# decimal string and moved with INCRBY, so it stays exact above 2**53, where Lua's doubles
# would round: max(last + 1, now), then the rest of the block.
DRAW_LUA = """
local function draw(key, unit, count)
  local t = redis.call('TIME')
  local now
  if unit == 'ns' then
    now = t[1] .. string.format('%06d', tonumber(t[2])) .. '000'
  elseif unit == 'us' then
    now = t[1] .. string.format('%06d', tonumber(t[2]))
  else
    now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
  end
  redis.call('INCRBY', key, 1)
  local first = redis.call('GET', key)
  if string.len(now) > string.len(first)
     or (string.len(now) == string.len(first) and now > first) then
    redis.call('SET', key, now)
    first = now
  end
  if count > 1 then
    redis.call('INCRBY', key, count - 1)
  end
  return first
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: turn, nonce, queue, waiters, own wake list. ARGV: token, ttl_ms, unit, count, wait_ms,
# ask channel. Free (or already ours): take it and the nonces -> {1, first, waiting}. Held:
# queue once (the hash holds each waiter's deadline, ttl and block size), ask -> {0, '0', 0}.
_TAKE = (
    DRAW_LUA
    + """
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('DEL', KEYS[5])
  return {1, draw(KEYS[2], ARGV[3], tonumber(ARGV[4])), redis.call('LLEN', KEYS[3])}
end
local deadline = now_ms() + tonumber(ARGV[5])
local meta = string.format('%.0f', deadline) .. ' ' .. ARGV[2] .. ' ' .. ARGV[4]
if redis.call('HSET', KEYS[4], ARGV[1], meta) == 1 then
  redis.call('RPUSH', KEYS[3], ARGV[1])
end
local keep = tonumber(ARGV[2]) + tonumber(ARGV[5])
redis.call('PEXPIRE', KEYS[3], keep)
redis.call('PEXPIRE', KEYS[4], keep)
redis.call('PUBLISH', ARGV[6], holder)
return {0, '0', 0}
"""
)

# KEYS: turn, nonce, queue, waiters. ARGV: token, unit, wake-list prefix. Withdraws the token
# as a waiter; if it holds the turn, hands it to the oldest waiter whose deadline has not
# passed (turn, ttl and nonces set here, the message pushed on its wake list) or frees it.
# The wake list is named from the waiter's token: fine on one Redis, not on a cluster.
_RELEASE = (
    DRAW_LUA
    + """
redis.call('HDEL', KEYS[4], ARGV[1])
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local now = now_ms()
while true do
  local waiter = redis.call('LPOP', KEYS[3])
  if not waiter then
    redis.call('DEL', KEYS[1])
    return 1
  end
  local meta = redis.call('HGET', KEYS[4], waiter)
  if meta then
    redis.call('HDEL', KEYS[4], waiter)
    local deadline, ttl, count = string.match(meta, '(%d+) (%d+) (%d+)')
    if tonumber(deadline) > now then
      redis.call('SET', KEYS[1], waiter, 'PX', ttl)
      local first = draw(KEYS[2], ARGV[2], tonumber(count))
      local wake = ARGV[3] .. waiter
      local waiting = redis.call('LLEN', KEYS[3])
      redis.call('RPUSH', wake, first .. ' ' .. count .. ' ' .. waiting)
      redis.call('PEXPIRE', wake, tonumber(ttl))
      return 2
    end
  end
end
"""
)


class Ticket:
    """One call's use of the turn: its nonce, and a hold on the turn after a timeout."""

    def __init__(self, turn: Turn) -> None:
        self._turn = turn

    async def nonce(self) -> int:
        """The next nonce of the turn's block (a fresh block if it ran out, turn still held)."""
        return await self._turn._next_nonce()

    def hold(self, seconds: float) -> None:
        """Keep the turn ``seconds`` after this call, so a late landing is not overtaken."""
        self._turn._hold(seconds)


class Turn:
    """This process's side of one key's turn: Redis for other processes, a gate for its own."""

    def __init__(
        self,
        redis: Redis,
        *,
        keys: dict[str, str],
        unit: str,
        draw: Callable[[int], Awaitable[int]],
        lease: float,
        lease_calls: int,
        wait: float = 1.0,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._unit = unit
        self._draw = draw
        self._lease = lease
        self._lease_calls = lease_calls
        self._wait = wait
        self._take_script = redis.register_script(_TAKE)
        self._release_script = redis.register_script(_RELEASE)
        self._gate = asyncio.Lock()
        self._token: str | None = None
        self._next = self._end = 0
        self._lease_end = self._hold_until = 0.0
        self._calls_left = 0
        self._used = 0
        self._asked = False
        self._timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def enter(self, timeout: float) -> AsyncIterator[Ticket]:
        """Hold the turn for one call; ``timeout`` bounds how long a dead holder keeps it."""
        async with self._gate:
            if self._timer is not None:
                self._timer.cancel()
            if not self._usable():
                await self._drop()
                await self._take(timeout)
            self._calls_left -= 1
            try:
                yield Ticket(self)
            finally:
                self._after_call()

    async def aclose(self) -> None:
        """Hand the turn over now (after any hold) and stop listening for asks."""
        if self._listener is not None:
            self._listener.cancel()
            with suppress(asyncio.CancelledError, RedisError):
                await self._listener
            self._listener = None
        async with self._gate:
            if self._timer is not None:
                self._timer.cancel()
            await self._drop()

    # ------------------------------------------------------------------ the lease

    def _usable(self) -> bool:
        loop = asyncio.get_running_loop()
        return (
            self._token is not None
            and not self._asked
            and self._calls_left > 0
            and loop.time() < self._lease_end
            and self._hold_until == 0.0
        )

    def _after_call(self) -> None:
        if self._token is None:
            return
        loop = asyncio.get_running_loop()
        if self._hold_until:
            self._schedule(self._hold_until)
        elif self._usable():
            self._schedule(self._lease_end)
        else:
            self._schedule(loop.time())

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(when, self._start_expiry)

    def _start_expiry(self) -> None:
        self._expiry = asyncio.get_running_loop().create_task(self._expire())

    async def _expire(self) -> None:
        async with self._gate:
            if self._token is not None and not self._usable():
                await self._drop()

    def _hold(self, seconds: float) -> None:
        if seconds > 0:
            self._hold_until = asyncio.get_running_loop().time() + seconds

    async def _next_nonce(self) -> int:
        if self._next >= self._end:  # the block ran out mid-lease: more, still in turn
            count = max(1, min(self._calls_left + 1, self._used))
            first = await self._draw(count)
            self._next, self._end = first, first + count
        self._used += 1
        nonce, self._next = self._next, self._next + 1
        return nonce

    # ------------------------------------------------------------------ Redis

    async def _take(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout * 4
        ttl_ms = int((self._lease + timeout) * 1000)
        token = uuid.uuid4().hex
        count = max(1, min(self._lease_calls, 2 * self._used))
        wake = self._keys["wake"] + token
        keys = [self._keys[k] for k in ("turn", "nonce", "queue", "waiters")] + [wake]
        # A waiter stays in line a little past its BLPOP, the time to come back and re-check.
        stay_ms = int(self._wait * 1000) + _RECHECK_SLACK_MS
        args = [token, ttl_ms, self._unit, count, stay_ms, self._keys["channel"]]
        self._ensure_listener()
        try:
            taken, first, waiting = await self._take_script(keys=keys, args=args)
            while not taken:
                reply = await self._redis.blpop([wake], timeout=self._wait)
                if reply is not None:
                    first, count, waiting = (int(part) for part in reply[1].split())
                    break
                if loop.time() > give_up:
                    raise LockError(f"turn for key {self._keys['key_id']!r} not free in time")
                taken, first, waiting = await self._take_script(keys=keys, args=args)
        except BaseException:
            # Withdraw as a waiter, and hand on a turn that reached us while we gave up.
            with suppress(RedisError):
                await asyncio.shield(self._release(token))
            raise
        self._token = token
        self._next, self._end = int(first), int(first) + int(count)
        self._lease_end = loop.time() + self._lease
        self._calls_left, self._used = self._lease_calls, 0
        self._asked = int(waiting) > 0  # others queued already: one call, then hand over

    async def _drop(self) -> None:
        """Release a held turn, after the rest of any hold (a late landing may be under way)."""
        if self._token is None:
            return
        remaining = self._hold_until - asyncio.get_running_loop().time()
        if remaining > 0:
            await asyncio.sleep(remaining)
        token, self._token = self._token, None
        self._hold_until, self._next, self._end = 0.0, 0, 0
        try:
            await self._release(token)
        except RedisError as exc:  # the turn then frees itself by expiry
            log.warning("could not release the turn of %r: %s", self._keys["key_id"], exc)

    async def _release(self, token: str) -> None:
        keys = [self._keys[k] for k in ("turn", "nonce", "queue", "waiters")]
        await self._release_script(keys=keys, args=[token, self._unit, self._keys["wake"]])

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        """Note asks for our turn; a missed one only means the lease runs to its bound."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._keys["channel"])
            async for message in pubsub.listen():
                data = message["data"]
                holder = data.decode() if isinstance(data, bytes) else data
                if self._token is not None and holder == self._token:
                    self._asked = True
                    if not self._gate.locked():
                        self._schedule(asyncio.get_running_loop().time())
        except RedisError as exc:
            log.info("not listening for asks on %r: %s", self._keys["key_id"], exc)
        finally:
            with suppress(RedisError):
                await pubsub.aclose()
