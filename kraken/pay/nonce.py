"""Nonces that only ever go up, for one API key shared by many processes and hosts.

Kraken rejects a nonce that is not above the last one it accepted for the key, and counts
rejections towards a lockout. :class:`RedisNonce` draws every nonce from one atomic Lua
script on Redis's own clock, so all workers share one sequence; :class:`ClockNonce` serves
a single process without Redis.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from kraken.pay.turn import Ticket, Turn
from kraken.pay.turn_scripts import DRAW_LUA

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["ClockNonce", "NonceSource", "RedisNonce", "Unit"]

Unit = Literal["ns", "us", "ms"]

# ARGV[2] nonces are reserved at once (the stored value is the last of them); the first is
# returned. The arithmetic is exact on decimal strings: see DRAW_LUA.
_NEXT_NONCES = DRAW_LUA + "return draw(KEYS[1], ARGV[1], tonumber(ARGV[2]))"

_SCALE = {"ns": 1, "us": 1_000, "ms": 1_000_000}


@runtime_checkable
class NonceSource(Protocol):
    """Where a client gets its nonces, and the lock that keeps them in order on the wire."""

    key_id: str

    async def next(self) -> int:
        """Return a nonce above every nonce this source has handed out for the key."""
        ...

    def ordering_lock(self, timeout: float) -> AbstractAsyncContextManager[Ticket | None]:
        """A lock held from drawing a nonce until its response, so calls reach Kraken in order.

        ``timeout`` bounds how long a holder that died can keep it. It may yield a
        :class:`~kraken.pay.turn.Ticket`, whose nonce comes with the turn; if it yields
        ``None`` the caller draws with :meth:`next` inside it.
        """
        ...


class RedisNonce:
    """Nonces for one API key from one Redis, shared by every process that uses that Redis.

    ``max(last + 1, now)`` with ``now`` from Redis ``TIME``: one clock for all hosts, and
    after a restart or ``FLUSHDB`` the next value is still above every earlier one.

    In serial mode the key's turn (:mod:`kraken.pay.turn`) is taken with its nonces in one
    script and kept for a ``lease`` of at most that many seconds and ``lease_calls`` calls,
    or until another process asks for it and this one has held it ``quantum`` seconds. Call
    :meth:`aclose` (the client's ``close`` does) to hand a kept turn over at once; a process
    that exits without it frees it by expiry.
    """

    def __init__(
        self,
        redis: Redis,
        key_id: str,
        unit: Unit = "ns",
        *,
        prefix: str = "kraken",
        lease: float = 0.05,
        lease_calls: int = 32,
        quantum: float = 0.01,
    ) -> None:
        if unit not in _SCALE:
            raise ValueError(f"unit: must be one of 'ns', 'us', 'ms', not {unit!r}")
        if not key_id:
            raise ValueError("key_id: must be a non-empty name for the API key")
        if not (isinstance(lease, int | float) and 0 <= lease <= 10):
            raise ValueError(f"lease: must be a number of seconds from 0 to 10, not {lease!r}")
        if not (isinstance(quantum, int | float) and 0 <= quantum <= lease):
            raise ValueError(f"quantum: must be seconds from 0 to lease ({lease}), not {quantum!r}")
        if not (isinstance(lease_calls, int) and lease_calls >= 1):
            raise ValueError(f"lease_calls: must be an integer >= 1, not {lease_calls!r}")
        self.redis = redis
        self.key_id = key_id
        self.unit = unit
        self.redis_key = f"{prefix}:nonce:{key_id}"
        self.lock_key = f"{prefix}:nonce-lock:{key_id}"
        self._script = redis.register_script(_NEXT_NONCES)
        self._turn = Turn(
            redis,
            keys={
                "key_id": key_id,
                "turn": self.lock_key,
                "nonce": self.redis_key,
                "queue": f"{prefix}:nonce-queue:{key_id}",
                "waiters": f"{prefix}:nonce-waiters:{key_id}",
                "wake": f"{prefix}:nonce-wake:{key_id}:",
                "channel": f"{prefix}:nonce-ask:{key_id}:",
            },
            unit=unit,
            draw=self.draw,
            lease=lease,
            lease_calls=lease_calls,
            quantum=quantum,
        )
        self._waiting: list[asyncio.Future[int]] = []
        self._drawer: asyncio.Future[None] | None = None
        # Window mode keeps a block of reserved nonces for at most `lease` seconds, sized to
        # demand (doubling while blocks run out, up to `lease_calls`).
        self._block_ttl, self._block_cap = lease, lease_calls
        self._block_next = self._block_end = 0
        self._block_expires = 0.0
        self._block_size = 0

    async def next(self) -> int:
        """One nonce; concurrent callers in this process share one script call (window mode),
        and the rest of a recently reserved block serves the next callers without Redis."""
        loop = asyncio.get_running_loop()
        nonce = self._from_block(loop)
        if nonce is not None:
            return nonce
        waiter: asyncio.Future[int] = loop.create_future()
        self._waiting.append(waiter)
        if self._drawer is None or self._drawer.done():
            self._drawer = asyncio.ensure_future(self._draw_for_waiters())
        return await waiter

    def _from_block(self, loop: asyncio.AbstractEventLoop) -> int | None:
        """The next nonce of the reserved block, or ``None`` if it ran out or expired."""
        if self._block_next < self._block_end and loop.time() < self._block_expires:
            nonce, self._block_next = self._block_next, self._block_next + 1
            return nonce
        return None

    def _serve_waiters_from_block(self) -> None:
        """Callers who queued during a draw take what the block it reserved still holds."""
        loop = asyncio.get_running_loop()
        while self._waiting:
            if self._waiting[0].done():  # cancelled meanwhile: it takes no nonce
                self._waiting.pop(0)
                continue
            nonce = self._from_block(loop)
            if nonce is None:
                return
            self._waiting.pop(0).set_result(nonce)

    async def _draw_for_waiters(self) -> None:
        while self._waiting:
            self._serve_waiters_from_block()
            if not self._waiting:
                return
            batch, self._waiting = self._waiting, []
            used_up = self._block_next >= self._block_end
            self._block_size = min(self._block_cap, max(1, self._block_size * 2) if used_up else 1)
            count = max(len(batch), self._block_size if used_up else 0)
            try:
                first = await self.draw(count)
            except Exception as exc:
                for waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            # A cancelled waiter's nonce is skipped: a gap is harmless, a repeat is not.
            for offset, waiter in enumerate(batch):
                if not waiter.done():
                    waiter.set_result(first + offset)
            self._block_next, self._block_end = first + len(batch), first + count
            self._block_expires = asyncio.get_running_loop().time() + self._block_ttl

    async def draw(self, count: int = 1) -> int:
        """Reserve ``count`` consecutive nonces in one atomic script; return the first."""
        return int(await self._script(keys=[self.redis_key], args=[self.unit, count]))

    def ordering_lock(self, timeout: float) -> AbstractAsyncContextManager[Ticket]:
        """The key's turn for one call, with its nonce (``await ticket.nonce()``)."""
        return self._turn.enter(timeout)

    async def aclose(self) -> None:
        """Hand over a turn kept by this process's lease; the Redis client stays open."""
        await self._turn.aclose()

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
