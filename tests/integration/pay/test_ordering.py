"""One API key, four processes, four cancels in flight each: serial never trips the nonce check."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid

import redis.asyncio as aioredis

from kraken.pay import Credentials, KrakenPayClient, RedisNonce, normalize_external_id
from kraken.pay.errors import InvalidNonce
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, SimulatorThread

PROCESSES = 4
IN_FLIGHT = 4
ROUNDS = 10


def _cancel_all(url: str, redis_url: str, ordering: str, ids: list[str]) -> int:
    """Cancel `ids`, IN_FLIGHT at a time; retry invalid nonces as a task would. Return retries."""

    async def main() -> int:
        redis = aioredis.Redis.from_url(redis_url)
        creds = Credentials(DEMO_API_KEY, DEMO_API_SECRET)
        nonce = RedisNonce(redis, creds.key_id)
        retries = 0

        async def cancel(eid: str) -> None:
            nonlocal retries
            while True:
                try:
                    await client.cancel_request(eid)
                    return
                except InvalidNonce:
                    retries += 1

        async with KrakenPayClient(creds, base_url=url, nonce=nonce, ordering=ordering) as client:
            for start in range(0, len(ids), IN_FLIGHT):
                await asyncio.gather(*(cancel(eid) for eid in ids[start : start + IN_FLIGHT]))
        await redis.aclose()
        return retries

    return asyncio.run(main())


def _run(ordering: str, redis_url: str) -> tuple[dict, dict, int]:
    ids = [normalize_external_id(uuid.uuid4()) for _ in range(PROCESSES * IN_FLIGHT * ROUNDS)]
    chunks = [ids[i::PROCESSES] for i in range(PROCESSES)]
    with SimulatorThread(nonce_window=0, seed=5) as sim:
        sim.create_requests(ids)
        # Some calls are held up after they left the client, as a slow network would: a call
        # sent later with a higher nonce can then overtake them.
        sim.set_faults({"delay": {"rate": 0.2, "seconds": 0.05}})
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(PROCESSES) as pool:
            jobs = [
                pool.apply_async(_cancel_all, (sim.url, redis_url, ordering, chunk))
                for chunk in chunks
            ]
            retries = sum(job.get(timeout=120) for job in jobs)
        return sim.stats(), sim.summary(), retries


def test_serial_mode_across_processes_has_zero_nonce_rejections(redis_url, redis_sync):
    stats, summary, retries = _run("serial", redis_url)
    assert stats["nonce_rejections"] == 0
    assert retries == 0
    assert stats["cancels_applied"] == PROCESSES * IN_FLIGHT * ROUNDS
    assert summary["by_state"] == {"cancelled": PROCESSES * IN_FLIGHT * ROUNDS}


def test_window_mode_without_a_window_meets_rejections_yet_cancels_all(redis_url, redis_sync):
    stats, summary, _ = _run("window", redis_url)
    assert stats["nonce_rejections"] > 0  # concurrent senders overtook each other
    assert stats["cancels_applied"] == PROCESSES * IN_FLIGHT * ROUNDS
    assert summary["by_state"] == {"cancelled": PROCESSES * IN_FLIGHT * ROUNDS}
