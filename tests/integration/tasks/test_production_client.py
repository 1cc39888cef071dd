"""The production client (``tasks.runtime.build_client``) from the settings: Redis nonces
and a rate budget per key, shared through the Redis at ``REDIS_URL``."""

from __future__ import annotations

from kraken.pay import KrakenPayClient, RateBudget, RedisNonce
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from tasks import runtime
from tasks.runtime import build_client
from tasks.settings import Secret, Settings

KEYS = {"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": DEMO_API_SECRET}


async def test_the_production_client_uses_redis_nonces_and_the_settings(redis_url):
    settings = Settings(
        api_key=DEMO_API_KEY,
        api_secret=Secret(DEMO_API_SECRET),
        api_url="http://127.0.0.1:1",
        redis_url=redis_url,
        ordering="window",
        timeout=3.0,
    )
    client = await runtime.build_client(settings)
    try:
        assert isinstance(client, KrakenPayClient)
        assert isinstance(client.nonce, RedisNonce)
        assert (client.base_url, client.ordering, client.timeout) == (
            "http://127.0.0.1:1",
            "window",
            3.0,
        )
        assert await client.nonce.next() > 0
    finally:
        await runtime.close_client(client)


async def test_the_production_client_shares_a_budget_per_key_through_redis(redis_url):
    env = {**KEYS, "REDIS_URL": redis_url, "KRAKEN_RATE_CAPACITY": "20"}
    env |= {"KRAKEN_RATE_PER_SECOND": "0.5", "KRAKEN_RATE_MAX_WAIT": "3"}
    client = await build_client(Settings.from_env(env))
    budget = client.rate_budget
    assert isinstance(budget, RateBudget)
    assert (budget.capacity, budget.per_second, budget.max_wait) == (20, 0.5, 3)
    assert budget.key_id == client.credentials.key_id
    await client.close()
    await client.nonce.redis.aclose()


async def test_with_the_budget_off_the_client_has_none(redis_url):
    env = {**KEYS, "REDIS_URL": redis_url, "KRAKEN_RATE_PER_SECOND": "off"}
    client = await build_client(Settings.from_env(env))
    assert client.rate_budget is None
    await client.close()
    await client.nonce.redis.aclose()
