"""One rate budget on a real Redis, shared by four processes.

Four processes, each with its own KrakenPayClient and 8 cancels in flight, push as hard as
they can for 10 s against one budget of R calls per second with a burst of C. The simulator
counts what reached it; its own rate limit, set to the same R and C, must refuse none.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading

import redis.asyncio as aioredis
from tasks_support import TASKS_DB, redis_db, unique

from kraken.pay import Credentials, KrakenPayClient, RedisNonce
from kraken.pay.errors import PayRequestError, RateLimited
from kraken.pay.ratelimit import RateBudget
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, SimulatorThread

PROCESSES = 4
IN_FLIGHT = 8
RATE = 10.0  # calls per second
CAPACITY = 10
SECONDS = 10.0
MOST = RATE * SECONDS + CAPACITY  # what the budget allows in the window

CREDS = Credentials(DEMO_API_KEY, DEMO_API_SECRET)


def _push(url: str, redis_url: str, prefix: str, start: threading.Barrier) -> int:
    """Once every process is ready, cancel as fast as the budget lets for SECONDS; return
    the calls sent."""

    async def main() -> int:
        redis = aioredis.Redis.from_url(redis_url)
        budget = RateBudget(redis, CREDS.key_id, capacity=CAPACITY, per_second=RATE, prefix=prefix)
        nonce = RedisNonce(redis, CREDS.key_id, prefix=prefix)
        sent = 0

        async def lane() -> None:
            nonlocal sent
            while True:
                try:
                    await client.cancel_request("AAAAAAAAAAE")  # unknown to Kraken: not_found
                except PayRequestError:
                    pass
                except RateLimited as exc:  # our budget's queue is too long: back off
                    await asyncio.sleep(exc.retry_after or 0.1)
                    continue
                sent += 1

        async with KrakenPayClient(CREDS, base_url=url, nonce=nonce, rate_budget=budget) as client:
            start.wait(60)  # blocks the loop, which has nothing to do yet
            lanes = [asyncio.ensure_future(lane()) for _ in range(IN_FLIGHT)]
            await asyncio.sleep(SECONDS)
            for task in lanes:  # a lane waiting for its slot never sends
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
        await redis.aclose()
        return sent

    return asyncio.run(main())


def test_four_processes_share_one_budget_and_kraken_refuses_none(redis_url):
    prefix = unique("test-budget")  # a budget and nonce sequence of this test alone
    url = redis_db(redis_url, TASKS_DB)
    ctx = multiprocessing.get_context("spawn")
    with SimulatorThread(rate_limit=(CAPACITY, RATE)) as sim, ctx.Pool(PROCESSES) as pool:
        start = ctx.Manager().Barrier(PROCESSES)  # all start together, however slow to boot
        jobs = [pool.apply_async(_push, (sim.url, url, prefix, start)) for _ in range(PROCESSES)]
        [job.get(timeout=120) for job in jobs]
        stats = sim.stats()

    assert stats["rate_limited"] == 0
    assert 0.9 * MOST <= stats["requests"] <= MOST
