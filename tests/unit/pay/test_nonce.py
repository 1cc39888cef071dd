"""Nonces: exact, strictly increasing across processes on one Redis, above all after a flush."""

from __future__ import annotations

import asyncio
import itertools
import time

import fakeredis
import pytest

from kraken.pay import ClockNonce, NonceSource, RedisNonce


async def test_redis_nonce_is_strictly_increasing(fake_redis):
    source = RedisNonce(fake_redis, "k")
    values = [await source.next() for _ in range(200)]
    assert all(b > a for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(("unit", "scale"), [("ns", 1), ("us", 1_000), ("ms", 1_000_000)])
async def test_redis_nonce_follows_the_clock_in_its_unit(fake_redis, unit, scale):
    before = time.time_ns() // scale
    value = await RedisNonce(fake_redis, "k", unit).next()
    after = time.time_ns() // scale
    # fakeredis's TIME is this host's clock, so the value lies between our two readings.
    assert before - 1_000_000 // scale <= value <= after + 1


async def test_redis_nonce_stays_exact_above_2_to_the_53(fake_redis):
    source = RedisNonce(fake_redis, "k")
    start = 2**63 - 10
    await fake_redis.set(source.redis_key, str(start))
    assert [await source.next() for _ in range(3)] == [start + 1, start + 2, start + 3]
    assert await source.draw(4) == start + 4
    assert int(await fake_redis.get(source.redis_key)) == start + 7


async def test_redis_nonce_keeps_separate_sequences_per_key(fake_redis):
    a, b = RedisNonce(fake_redis, "a"), RedisNonce(fake_redis, "b")
    await fake_redis.set(a.redis_key, str(2**62))
    assert await a.next() == 2**62 + 1
    assert await b.next() < 2**62


async def test_concurrent_draws_share_one_script_call_and_stay_distinct(fake_redis):
    source = RedisNonce(fake_redis, "k")
    calls = []
    real_draw = source.draw

    async def counting_draw(count: int = 1) -> int:
        calls.append(count)
        return await real_draw(count)

    source.draw = counting_draw  # type: ignore[method-assign]
    values = await asyncio.gather(*(source.next() for _ in range(100)))
    assert len(set(values)) == 100
    assert sum(calls) == 100 and len(calls) < 100
    assert int(await fake_redis.get(source.redis_key)) == max(values)
    assert await source.next() > max(values)


async def test_a_failed_draw_fails_its_waiters_and_the_next_draw_works(fake_redis):
    source = RedisNonce(fake_redis, "k")
    real_draw = source.draw
    failures = [ConnectionError("redis went away")]

    async def flaky_draw(count: int = 1) -> int:
        if failures:
            raise failures.pop()
        return await real_draw(count)

    source.draw = flaky_draw  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await source.next()
    assert await source.next() > 0


def test_bad_unit_and_empty_key_are_refused():
    with pytest.raises(ValueError, match="unit"):
        RedisNonce(fakeredis.FakeAsyncRedis(), "k", "s")
    with pytest.raises(ValueError, match="key_id"):
        RedisNonce(fakeredis.FakeAsyncRedis(), "")
    with pytest.raises(ValueError, match="unit"):
        ClockNonce("minutes")


async def test_clock_nonce_is_strictly_increasing_even_within_one_tick():
    source = ClockNonce("ms")
    values = [await source.next() for _ in range(1000)]
    assert len(set(values)) == 1000
    assert values == sorted(values)


def test_both_sources_satisfy_the_protocol():
    assert isinstance(ClockNonce(), NonceSource)
    assert isinstance(RedisNonce(fakeredis.FakeAsyncRedis(), "k"), NonceSource)


async def test_ordering_lock_excludes_a_second_holder(fake_redis):
    source = RedisNonce(fake_redis, "k")
    other = RedisNonce(fake_redis, "k")  # another process, as far as the lock can tell
    async with source.ordering_lock(timeout=5):
        assert await fake_redis.exists(source.lock_key)
        assert await other.redis.lock(other.lock_key).acquire(blocking=False) is False
    # The process keeps the turn for its lease after the call; closing hands it over at once.
    await source.aclose()
    assert not await fake_redis.exists(source.lock_key)


def _count_draws(source: RedisNonce, round_trip_ticks: int = 0) -> list[int]:
    """The size of each script draw ``source`` makes, each taking that many loop turns."""
    calls: list[int] = []
    real_draw = source.draw

    async def counting_draw(count: int = 1) -> int:
        calls.append(count)
        for _ in range(round_trip_ticks):
            await asyncio.sleep(0)
        return await real_draw(count)

    source.draw = counting_draw  # type: ignore[method-assign]
    return calls


async def test_sequential_draws_come_from_reserved_blocks_with_few_script_calls(fake_redis):
    source = RedisNonce(fake_redis, "k", lease=10.0, lease_calls=16)
    calls = _count_draws(source)
    values = [await source.next() for _ in range(100)]
    assert all(b > a for a, b in itertools.pairwise(values))
    assert len(calls) < 15 and max(calls) == 16  # blocks double up to lease_calls


async def test_callers_who_queue_during_a_draw_take_the_block_it_reserved(fake_redis):
    # Window mode, callers arriving one after another: those who come while a block is being
    # drawn are served from it, not by draws of their own (one script call per 3 cancels).
    source = RedisNonce(fake_redis, "k", lease=10.0, lease_calls=32)
    calls = _count_draws(source, round_trip_ticks=4)  # the other lanes call meanwhile

    async def lane(n: int) -> list[int]:
        values = []
        for _ in range(20):
            for _ in range(n % 5):  # lanes out of step, as answers come back
                await asyncio.sleep(0)
            values.append(await source.next())
        return values

    lanes = await asyncio.gather(*(lane(n) for n in range(32)))
    values = [v for lane_values in lanes for v in lane_values]
    assert len(set(values)) == 640
    assert sum(calls) < 640 + 64  # few reserved nonces left unused
    assert len(calls) <= 640 // 32 + 8  # blocks grow to 32, and each is used up
