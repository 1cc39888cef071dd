"""The key's turn on a real Redis: one round trip to take it, woken not polling, fair hand-over.

Two ``RedisNonce`` objects on one key stand for two processes: each has its own token, lease
and listener, exactly as two processes would (the cross-process tests are test_ordering.py
and the benchmarks).
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing

import pytest
import redis.asyncio as aioredis

from kraken.pay import RedisNonce


def _count(source: RedisNonce, name: str, calls: list[str]) -> None:
    """Record each call of the turn's script (``run``) or of BLPOP into ``calls``."""
    turn = source._turn
    if name == "run":
        real = turn._run

        async def run(args, wake):
            calls.append("run")
            return await real(args, wake)

        turn._run = run  # type: ignore[method-assign]
    else:
        real_blpop = turn._redis.blpop

        async def blpop(*args, **kwargs):
            calls.append("blpop")
            return await real_blpop(*args, **kwargs)

        turn._redis.blpop = blpop  # type: ignore[method-assign]


async def _queued(redis_async, source: RedisNonce, count: int) -> None:
    """Wait (with a deadline) until ``count`` waiters are in line for the source's key."""
    queue = source._turn._keys["queue"]

    async def poll() -> None:
        while await redis_async.llen(queue) < count:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), 5)


async def _one_call(source: RedisNonce, timeout: float = 5.0) -> int:
    async with source.ordering_lock(timeout) as ticket:
        return await ticket.nonce()


async def test_a_lease_serves_many_calls_with_one_script_call(redis_async):
    source = RedisNonce(redis_async, "lease", lease=5.0, lease_calls=20)
    calls: list[str] = []
    _count(source, "run", calls)
    nonces = [await _one_call(source) for _ in range(10)]
    assert calls == ["run"]  # took the turn once, with its nonces
    assert all(b > a for a, b in itertools.pairwise(nonces))
    await source.aclose()
    assert not await redis_async.exists(source.lock_key)


async def test_the_lease_ends_after_its_number_of_calls(redis_async):
    source = RedisNonce(redis_async, "calls", lease=5.0, lease_calls=3)
    calls: list[str] = []
    _count(source, "run", calls)
    for _ in range(7):
        await _one_call(source)
    assert calls.count("run") == 3  # calls 1, 4 and 7 took (or passed) the turn
    await source.aclose()


async def test_reserved_but_unused_nonces_are_skipped_never_repeated(redis_async):
    first = RedisNonce(redis_async, "skip", lease=5.0, lease_calls=32)
    used = [await _one_call(first) for _ in range(4)]  # the next lease reserves a block of 8
    await first.aclose()
    second = RedisNonce(redis_async, "skip")
    assert await _one_call(second) > int(await redis_async.get(first.redis_key)) - 1 > max(used)
    await second.aclose()


async def test_a_waiter_blocks_until_the_release_wakes_it(redis_async):
    holder, waiter = RedisNonce(redis_async, "wake", lease=5.0), RedisNonce(redis_async, "wake")
    calls: list[str] = []
    _count(waiter, "run", calls)
    _count(waiter, "blpop", calls)
    async with holder.ordering_lock(5) as ticket:
        held = await ticket.nonce()
        waiting = asyncio.create_task(_one_call(waiter))
        await _queued(redis_async, holder, 1)
        await asyncio.sleep(0.3)  # not a synchronisation: time in which a poller would poll
        assert not waiting.done()
    assert await asyncio.wait_for(waiting, 5) > held
    assert calls == ["run", "blpop"]  # one take that queued it, one wait that handed it over
    await holder.aclose()
    await waiter.aclose()


async def test_a_holder_hands_over_when_another_process_asks_before_its_lease_ends(redis_async):
    holder = RedisNonce(redis_async, "ask", lease=10.0, lease_calls=1000, quantum=0)
    other = RedisNonce(redis_async, "ask")
    await _one_call(holder)  # holder keeps the turn for its 10 s lease...
    assert await redis_async.exists(holder.lock_key)
    # ...but hands it over as soon as another process asks.
    assert await asyncio.wait_for(_one_call(other), 3) > 0
    await holder.aclose()
    await other.aclose()


async def test_waiters_are_served_in_the_order_they_asked(redis_async):
    holder = RedisNonce(redis_async, "fair", lease=5.0)
    others = [RedisNonce(redis_async, "fair", quantum=0) for _ in range(4)]
    order: list[int] = []

    async def call(n: int) -> None:
        await _one_call(others[n])
        order.append(n)
        await others[n].aclose()

    async with holder.ordering_lock(5):
        tasks = []
        for n in range(4):
            tasks.append(asyncio.create_task(call(n)))
            await _queued(redis_async, holder, n + 1)  # each asks after the one before
    await holder.aclose()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert order == [0, 1, 2, 3]


async def test_a_dead_holder_frees_the_turn_by_expiry(redis_async):
    source = RedisNonce(redis_async, "dead")
    await redis_async.set(source.lock_key, "gone.process", px=300)  # a holder that died
    assert await asyncio.wait_for(_one_call(source), 5) > 0
    await source.aclose()


async def test_a_waiter_that_gives_up_does_not_leave_the_turn_to_nobody(redis_async):
    holder, quitter = RedisNonce(redis_async, "quit", lease=5.0), RedisNonce(redis_async, "quit")
    async with holder.ordering_lock(5):
        waiting = asyncio.create_task(_one_call(quitter))
        await _queued(redis_async, holder, 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    await holder.aclose()
    assert not await redis_async.exists(holder.lock_key)  # freed, not handed to the quitter


async def test_a_hold_keeps_the_turn_from_others_until_it_ends(redis_async):
    holder, other = RedisNonce(redis_async, "hold"), RedisNonce(redis_async, "hold")
    loop = asyncio.get_running_loop()
    async with holder.ordering_lock(5) as ticket:
        await ticket.nonce()
        ticket.hold(0.4)
        held_from = loop.time()
    got = await asyncio.wait_for(_one_call(other), 5)
    assert loop.time() - held_from >= 0.4
    assert got > 0
    await holder.aclose()
    await other.aclose()


def test_bad_lease_settings_are_refused():
    redis = aioredis.Redis()
    with pytest.raises(ValueError, match="lease"):
        RedisNonce(redis, "k", lease=-1)
    with pytest.raises(ValueError, match="lease_calls"):
        RedisNonce(redis, "k", lease_calls=0)
    with pytest.raises(ValueError, match="quantum"):
        RedisNonce(redis, "k", lease=0.01, quantum=0.5)


async def test_an_idle_holder_hands_over_at_once_not_after_its_quantum(redis_async):
    holder = RedisNonce(redis_async, "idle", lease=10.0, lease_calls=1000, quantum=10.0)
    other = RedisNonce(redis_async, "idle")
    await _one_call(holder)  # then idle, as a worker between two tasks
    loop = asyncio.get_running_loop()
    asked_at = loop.time()
    await asyncio.wait_for(_one_call(other), 5)
    assert loop.time() - asked_at < 5  # well inside the 10 s quantum (and lease)
    await holder.aclose()
    await other.aclose()


async def test_once_asked_a_holder_between_tasks_frees_the_turn_when_idle(redis_async):
    # A busy fleet: after one ask, a holder that does not call back to back (a worker between
    # tasks) frees the turn after each call, so the next asker takes it in one script call
    # instead of queueing, asking and blocking.
    holder = RedisNonce(redis_async, "fleet", lease=10.0, lease_calls=1000, quantum=0)
    other = RedisNonce(redis_async, "fleet")
    await _one_call(holder)
    await asyncio.wait_for(_one_call(other), 5)  # asks: the holder hands over
    await other.aclose()
    await asyncio.sleep(0.002)  # the holder's next task comes milliseconds later
    await _one_call(holder)

    async def freed() -> None:
        while await redis_async.exists(holder.lock_key):
            await asyncio.sleep(0.002)

    await asyncio.wait_for(freed(), 2)  # released with no new ask, inside its 10 s lease
    calls: list[str] = []
    _count(other, "run", calls)
    _count(other, "blpop", calls)
    await _one_call(other)
    assert calls == ["run"]
    await holder.aclose()
    await other.aclose()


def _call_and_close_repeatedly(url: str, rounds: int) -> int:
    """In its own process: ``rounds`` times a fresh source, one call, close; each bounded."""

    async def main() -> int:
        redis = aioredis.Redis.from_url(url)
        done = 0
        for _ in range(rounds):
            source = RedisNonce(redis, "closing")
            await asyncio.wait_for(_one_call(source), 10)
            await asyncio.wait_for(source.aclose(), 10)
            done += 1
        await redis.aclose()
        return done

    return asyncio.run(main())


def test_processes_closing_at_once_never_hang(redis_url, redis_sync):
    # redis-py's pub/sub read once swallowed the cancel of the ask listener, and close hung.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(6) as pool:
        jobs = [pool.apply_async(_call_and_close_repeatedly, (redis_url, 15)) for _ in range(6)]
        assert [job.get(timeout=200) for job in jobs] == [15] * 6
