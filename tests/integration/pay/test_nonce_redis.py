"""Nonces on a real Redis: exact, strictly increasing across processes, above all after a
flush; the client's serial ordering on it."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import uuid

import redis.asyncio as aioredis

from kraken.pay import Credentials, KrakenPayClient, RedisNonce, normalize_external_id
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET

CREDS = Credentials(DEMO_API_KEY, DEMO_API_SECRET)

PROCESSES = 8


PER_PROCESS = 10_000


SEQUENCE_KEY = "test:nonce-seq"


def _draw(url: str, key_id: str, count: int, start: multiprocessing.synchronize.Event) -> list:
    """Draw `count` nonces; each paired, atomically, with Redis's own order of execution."""

    async def main() -> list[tuple[int, int]]:
        client = aioredis.Redis.from_url(url)
        source = RedisNonce(client, key_id)
        pairs = []
        start.wait(30)
        for _ in range(count):
            pipe = client.pipeline(transaction=True)  # MULTI/EXEC: script and INCR run together
            await source._script(keys=[source.redis_key], args=[source.unit, 1], client=pipe)
            pipe.incr(SEQUENCE_KEY)
            nonce, seq = await pipe.execute()
            pairs.append((int(seq), int(nonce)))
        await client.aclose()
        return pairs

    return asyncio.run(main())


def test_eight_processes_draw_distinct_strictly_increasing_nonces(redis_url, redis_sync):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Manager().Event()
    with ctx.Pool(PROCESSES) as pool:
        jobs = [
            pool.apply_async(_draw, (redis_url, "shared", PER_PROCESS, start))
            for _ in range(PROCESSES)
        ]
        start.set()
        results = [job.get(timeout=240) for job in jobs]

    everything = sorted(pair for result in results for pair in result)
    nonces = [nonce for _, nonce in everything]
    assert len(nonces) == PROCESSES * PER_PROCESS
    assert len(set(nonces)) == PROCESSES * PER_PROCESS
    # In the order Redis executed the draws, every nonce is above the one before.
    assert all(b > a for a, b in itertools.pairwise(nonces))
    for result in results:  # and so is each process's own sequence
        own = [nonce for _, nonce in result]
        assert own == sorted(own)


async def test_after_flushdb_the_next_nonce_is_above_every_earlier_one(redis_async):
    source = RedisNonce(redis_async, "flush")
    earlier = [await source.next() for _ in range(1000)]
    await redis_async.flushdb()
    assert not await redis_async.exists(source.redis_key)
    assert await source.next() > max(earlier)


async def test_ns_nonces_from_real_redis_are_exact_integers(redis_async):
    source = RedisNonce(redis_async, "exact")
    seconds, micros = await redis_async.time()
    value = await source.next()
    assert value > 2**53
    assert value // 1000 >= seconds * 1_000_000 + micros  # built from TIME, digit for digit
    stored = await redis_async.get(source.redis_key)
    assert int(stored) == value and stored.decode() == str(value)
    await redis_async.set(source.redis_key, str(2**63 - 5))
    assert await source.next() == 2**63 - 4


async def test_concurrent_calls_in_serial_mode_meet_no_nonce_rejection(sim, redis_async):
    nonce = RedisNonce(redis_async, CREDS.key_id)
    ids = [normalize_external_id(uuid.uuid4()) for _ in range(10)]
    sim.create_requests(ids)
    before = sim.stats()["nonce_rejections"]
    async with KrakenPayClient(CREDS, base_url=sim.url, nonce=nonce) as client:
        await asyncio.gather(*(client.cancel_request(eid) for eid in ids))
    assert sim.stats()["nonce_rejections"] == before
    assert not await redis_async.exists(nonce.lock_key)  # released
