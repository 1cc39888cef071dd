"""The per-key turn that keeps serial calls in nonce order across processes and hosts.

One Lua script takes the turn and draws its nonces together, so an uncontested call costs one
round trip; another releases it and hands it, with fresh nonces, to the oldest live waiter,
who blocks on a list of its own (``BLPOP``) instead of polling. A process keeps the turn for a
short lease, bounded in time and in calls, and passes it among its own callers without Redis
until another process asks for it: the asker's failed take publishes the holder's token, and
the holder hands over after the call in flight once it has held the turn for a ``quantum``
(10 ms by default). A call to the real Kraken takes longer than that, so there the turn
passes after every call; on loopback a hand-over between processes costs 0.5-1 ms, and one
call per turn would spend most of the time handing over. For a while after an ask, a holder
that is not calling back to back (a worker between tasks) frees the turn whenever it is idle,
so the next asker takes a free turn in one round trip. A dead holder frees it by expiry.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import suppress
from typing import TYPE_CHECKING

from redis.exceptions import LockError, RedisError

from kraken.pay.turn_scripts import PASS_LUA

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.asyncio import Redis

__all__ = ["Ticket", "Turn"]

log = logging.getLogger("kraken.pay.turn")

_RECHECK_SLACK_MS = 250
_LISTEN_READ = 0.25  # seconds per pub/sub read, the bound on stopping the listener
# Once another process asks, an idle holder keeps the turn this long for its own next call,
# if its last gap between calls was shorter: a caller that loops calls again within
# microseconds; a Celery worker's next task is milliseconds away: it hands over at once.
_LINGER = 0.0003
# After another process asked, a holder that is not calling back to back hands over as soon
# as it is idle, for this long: in a busy fleet the next asker then finds the turn free.
_CONTENDED = 1.0


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


class _Entry:
    """``async with turn.enter(timeout) as ticket``: the gate, then the turn (taken if need be)."""

    __slots__ = ("_timeout", "_turn")

    def __init__(self, turn: Turn, timeout: float) -> None:
        self._turn, self._timeout = turn, timeout

    async def __aenter__(self) -> Ticket:
        turn = self._turn
        await turn._gate.acquire()
        turn._cancel_timer()
        turn._last_gap = asyncio.get_running_loop().time() - turn._idle_since
        try:
            if not turn._usable():
                await turn._take(self._timeout)
        except BaseException:
            turn._gate.release()
            raise
        turn._calls_left -= 1
        return turn._ticket

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            self._turn._after_call()
        finally:
            self._turn._gate.release()


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
        quantum: float,
        wait: float = 1.0,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._unit = unit
        self._draw = draw
        self._lease = lease
        self._lease_calls = lease_calls
        self._quantum = quantum
        self._wait = wait
        self._script = redis.register_script(PASS_LUA)
        self._instance = uuid.uuid4().hex[:16]  # starts each token: asks reach this process
        self._last_ask: str | None = None
        self._gate = asyncio.Lock()
        self._token: str | None = None
        self._next = self._end = 0
        self._lease_end = self._quantum_end = self._hold_until = 0.0
        self._calls_left = 0
        self._used = 0
        self._asked = False
        self._contended_at = float("-inf")  # when another process last asked or waited
        self._timer: asyncio.TimerHandle | None = None
        self._timer_gen = 0
        self._idle_since = 0.0
        self._last_gap = float("inf")  # between this process's calls: back to back or not
        self._expiry: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._ticket = Ticket(self)

    def enter(self, timeout: float) -> _Entry:
        """Hold the turn for one call; ``timeout`` bounds how long a dead holder keeps it."""
        return _Entry(self, timeout)

    async def aclose(self) -> None:
        """Hand the turn over now (after any hold) and stop listening for asks."""
        if self._listener is not None:
            self._listening = False
            self._listener.cancel()
            await asyncio.wait({self._listener}, timeout=2 * _LISTEN_READ)
            self._listener = None
        async with self._gate:
            self._cancel_timer()
            await self._drop()

    # ------------------------------------------------------------------ the lease

    def _usable_until(self) -> float:
        """When this process stops using the held turn: lease end, or quantum end if asked."""
        return min(self._lease_end, self._quantum_end) if self._asked else self._lease_end

    def _usable(self) -> bool:
        return (
            self._token is not None
            and self._calls_left > 0
            and self._hold_until == 0.0
            and asyncio.get_running_loop().time() < self._usable_until()
        )

    def _after_call(self) -> None:
        """Set the idle turn's timer: hand over now, at the end of a hold, after a short
        linger for this process's next call once another asked, or at the lease's end."""
        if self._token is None:
            return
        now = asyncio.get_running_loop().time()
        if self._hold_until:
            self._schedule(self._hold_until)
        elif not self._usable():
            self._schedule(now)
        elif self._asked or self._last_gap >= _LINGER:
            # Others wait, or this process does not call back to back (a worker between
            # tasks): hand over now, or after the linger for a back-to-back caller.
            self._schedule(min(self._usable_until(), now + self._linger()))
        else:
            self._schedule(self._lease_end)
        self._idle_since = now

    def _linger(self) -> float:
        """How long an asked, idle holder waits for its own next call: a short linger if this
        process calls back to back (its last gap between calls was shorter), else none."""
        return _LINGER if self._last_gap < _LINGER else 0.0

    def _on_ask(self) -> None:
        """Another process asks: an idle holder hands over after the linger; a busy one's
        call in flight sets the timer when it ends."""
        now = asyncio.get_running_loop().time()
        self._asked, self._contended_at = True, now
        if not self._gate.locked():
            self._schedule(min(self._usable_until(), now + self._linger()))

    def _cancel_timer(self) -> None:
        """A call starts: the idle timer, and any expiry it already started, are void."""
        self._timer_gen += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self, when: float) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_at(when, self._start_expiry, self._timer_gen)

    def _start_expiry(self, gen: int) -> None:
        self._expiry = asyncio.get_running_loop().create_task(self._expire(gen))

    async def _expire(self, gen: int) -> None:
        async with self._gate:  # idle: hand over if asked or out of lease
            live = gen == self._timer_gen and self._token is not None
            if live and (self._asked or self._contended() or not self._usable()):
                await self._drop()

    def _contended(self) -> bool:
        """Others asked for the turn within the last ``_CONTENDED`` seconds, and this process
        does not call back to back: it hands over when idle without waiting to be asked."""
        now = asyncio.get_running_loop().time()
        return self._last_gap >= _LINGER and now - self._contended_at < _CONTENDED

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
        """Take the turn with a block of nonces, passing on the one this process held."""
        old = await self._give_up()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout * 4
        ttl_ms = int((self._lease + timeout) * 1000)
        token = f"{self._instance}.{uuid.uuid4().hex}"
        count = max(1, min(self._lease_calls, 2 * self._used))
        wake = self._keys["wake"] + token
        # A waiter stays in line a little past its BLPOP, the time to come back and re-check.
        stay_ms = int(self._wait * 1000) + _RECHECK_SLACK_MS
        args = [old, token, ttl_ms, self._unit, count, stay_ms]
        self._ensure_listener()
        try:
            taken, first, waiting = await self._run(args, wake)
            args[0] = ""
            while not taken:
                reply = await self._redis.blpop([wake], timeout=self._wait)
                if reply is not None:
                    first, count, waiting = (int(part) for part in reply[1].split())
                    break
                if loop.time() > give_up:
                    raise LockError(f"turn for key {self._keys['key_id']!r} not free in time")
                taken, first, waiting = await self._run(args, wake)
        except BaseException:
            # Withdraw as a waiter, and hand on a turn that reached us while we gave up.
            with suppress(RedisError):
                await asyncio.shield(self._run([token, "", 0, self._unit, 0, 0], wake))
            raise
        self._token = token
        self._next, self._end = int(first), int(first) + int(count)
        self._lease_end = loop.time() + self._lease
        self._quantum_end = loop.time() + self._quantum
        self._calls_left, self._used = self._lease_calls, 0
        # Others in line already: one call, then hand over.
        self._asked = int(waiting) > 0 or self._last_ask == token
        if self._asked:
            self._contended_at = loop.time()

    async def _drop(self) -> None:
        """Release a held turn (after the rest of any hold) to the next waiter, or free it."""
        old = await self._give_up()
        if old:
            try:
                await self._run([old, "", 0, self._unit, 0, 0], self._keys["wake"])
            except RedisError as exc:  # the turn then frees itself by expiry
                log.warning("could not release the turn of %r: %s", self._keys["key_id"], exc)

    async def _give_up(self) -> str:
        """Forget the held turn, once any hold has run out; return its token ('' if none)."""
        if self._token is None:
            return ""
        remaining = self._hold_until - asyncio.get_running_loop().time()
        if remaining > 0:  # a timed-out call may still land: nothing may overtake it
            await asyncio.sleep(remaining)
        token, self._token = self._token, None
        self._hold_until, self._next, self._end = 0.0, 0, 0
        return token

    async def _run(self, args: list, wake: str) -> list:
        keys = [self._keys[k] for k in ("turn", "nonce", "queue", "waiters")] + [wake]
        extra = [self._keys["channel"], self._keys["wake"]]
        return await self._script(keys=keys, args=[*args, *extra])

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listening = True
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        """Note asks for our turn; a missed one only means the lease runs to its bound.

        Reads with a timeout and stops on a flag: redis-py's pub/sub read can swallow a
        cancellation (seen with 8 processes closing at once), so cancelling alone may hang.
        """
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._keys["channel"] + self._instance)
            while self._listening:
                message = await pubsub.get_message(timeout=_LISTEN_READ)
                if message is None:
                    continue
                data = message["data"]
                holder = data.decode() if isinstance(data, bytes) else data
                self._last_ask = holder  # may come before the handover's own message
                if self._token is not None and holder == self._token:
                    self._on_ask()
        except RedisError as exc:
            log.info("not listening for asks on %r: %s", self._keys["key_id"], exc)
        finally:
            with suppress(RedisError):
                await pubsub.aclose()
