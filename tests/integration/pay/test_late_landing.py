"""After a timeout in serial mode the key's turn is kept a grace period: the late call lands first.

The simulator's ``delay`` fault holds the first call past the client's timeout and then applies
it, as a slow network would deliver it late. A second call waits behind it in the same key's
turn; without a grace it overtakes the late one, whose lower nonce is then rejected.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from kraken.pay import ClockNonce, Credentials, KrakenPayClient, RedisNonce, normalize_external_id
from kraken.pay.errors import TransportError
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, Simulator

CREDS = Credentials(DEMO_API_KEY, DEMO_API_SECRET)
TIMEOUT = 0.2
DELAY = 0.6  # the late call lands 0.4 s after the client gave up on it


async def _two_calls(redis: aioredis.Redis, source: str, grace: float) -> dict:
    """One call held past the timeout, a second one queued behind it; the simulator's counts."""
    ids = [normalize_external_id(uuid.uuid4()) for _ in range(2)]
    nonce = RedisNonce(redis, CREDS.key_id) if source == "redis" else ClockNonce()
    async with Simulator(seed=1) as sim:
        sim.create_requests(ids)
        sim.set_faults({"delay": {"next": 1, "seconds": DELAY}})
        async with KrakenPayClient(
            CREDS, base_url=sim.url, nonce=nonce, timeout=TIMEOUT, late_landing_grace=grace
        ) as client:
            first = asyncio.create_task(client.cancel_request(ids[0]))
            await asyncio.sleep(0)  # the first call takes the turn before the second asks
            second = asyncio.create_task(client.cancel_request(ids[1]))
            with pytest.raises(TransportError) as timed_out:
                await first
            assert timed_out.value.ambiguous
            await second

            async def landed() -> None:  # the late call is applied, or refused, by DELAY
                while sum(sim.stats()[k] for k in ("cancels_applied", "nonce_rejections")) < 2:
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(landed(), 5)
            stats = sim.stats()
    return stats


@pytest.mark.parametrize("source", ["redis", "clock"])
async def test_without_a_grace_the_next_call_overtakes_the_late_one(redis_async, source):
    stats = await _two_calls(redis_async, source, grace=0)
    assert stats["nonce_rejections"] == 1
    assert stats["cancels_applied"] == 1


@pytest.mark.parametrize("source", ["redis", "clock"])
async def test_with_a_grace_the_late_call_lands_first_and_nothing_is_rejected(redis_async, source):
    stats = await _two_calls(redis_async, source, grace=1.0)
    assert stats["nonce_rejections"] == 0
    assert stats["cancels_applied"] == 2
