"""The shared rate budget: a burst of `capacity`, then `per_second`, held back for everyone;
inside the client, a call without budget left is never sent.

The budget on one real Redis, shared by four processes: integration/pay/test_ratelimit_shared.py.
"""

from __future__ import annotations

import time

import fakeredis
import pytest

from kraken.pay import Credentials, KrakenPayClient
from kraken.pay.errors import PayRequestError, RateLimited
from kraken.pay.ratelimit import STARTER_CAPACITY, STARTER_PER_SECOND, RateBudget
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET

CREDS = Credentials(DEMO_API_KEY, DEMO_API_SECRET)


def test_defaults_are_krakens_starter_tier():
    budget = RateBudget(fakeredis.FakeAsyncRedis(), "k")
    assert (budget.capacity, budget.per_second) == (STARTER_CAPACITY, STARTER_PER_SECOND)
    assert (STARTER_CAPACITY, STARTER_PER_SECOND) == (15, 0.33)


async def test_a_burst_of_capacity_goes_at_once_then_the_rate_applies(fake_redis):
    budget = RateBudget(fake_redis, "k", capacity=5, per_second=20, max_wait=5, headroom=0)
    waits = [await budget.acquire() for _ in range(8)]
    assert waits[:5] == [0, 0, 0, 0, 0]
    assert all(0 < w <= 0.06 for w in waits[5:])


async def test_headroom_keeps_calls_of_the_burst_in_reserve_for_network_jitter(fake_redis):
    budget = RateBudget(fake_redis, "k", capacity=5, per_second=20, max_wait=5, headroom=1)
    waits = [await budget.acquire() for _ in range(5)]
    assert waits[:4] == [0, 0, 0, 0]
    assert 0 < waits[4] <= 0.06


async def test_the_burst_is_at_least_one_call_whatever_the_headroom(fake_redis):
    budget = RateBudget(fake_redis, "k", capacity=1, per_second=0.1, max_wait=0, headroom=1)
    assert await budget.acquire() == 0


async def test_a_wait_longer_than_max_wait_raises_rate_limited_and_reserves_nothing(fake_redis):
    budget = RateBudget(fake_redis, "k", capacity=1, per_second=0.5, max_wait=0.1)
    await budget.acquire()
    tat_before = await fake_redis.get(budget.redis_key)
    with pytest.raises(RateLimited) as info:
        await budget.acquire()
    assert 1.5 < info.value.retry_after <= 2.0
    assert info.value.transient
    assert await fake_redis.get(budget.redis_key) == tat_before


async def test_penalize_holds_back_every_holder_of_the_key(fake_redis):
    mine = RateBudget(fake_redis, "k", capacity=10, per_second=100, max_wait=0)
    theirs = RateBudget(fake_redis, "k", capacity=10, per_second=100, max_wait=0)
    await mine.penalize(2.0)
    with pytest.raises(RateLimited) as info:
        await theirs.acquire()
    assert 1.8 < info.value.retry_after <= 2.1


async def test_keys_have_separate_budgets(fake_redis):
    a = RateBudget(fake_redis, "a", capacity=1, per_second=0.1, max_wait=0)
    b = RateBudget(fake_redis, "b", capacity=1, per_second=0.1, max_wait=0)
    await a.acquire()
    assert await b.acquire() == 0
    with pytest.raises(RateLimited):
        await a.acquire()


async def test_waiting_is_asynchronous_and_paced(fake_redis):
    budget = RateBudget(fake_redis, "k", capacity=1, per_second=50, max_wait=1)
    start = time.monotonic()
    for _ in range(6):
        await budget.acquire()
    assert time.monotonic() - start >= 5 / 50 * 0.9


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"capacity": 0}, "capacity"),
        ({"per_second": 0}, "per_second"),
        ({"max_wait": -1}, "max_wait"),
        ({"headroom": -1}, "headroom"),
    ],
)
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RateBudget(fakeredis.FakeAsyncRedis(), "k", **kwargs)


# ---------------------------------------------------------------- inside the client


def budget_on(redis, **numbers) -> RateBudget:
    return RateBudget(redis, CREDS.key_id, **{"max_wait": 0.0, "headroom": 0.0, **numbers})


async def test_a_call_without_budget_left_is_refused_before_it_is_sent(sim, fake_redis):
    budget = budget_on(fake_redis, capacity=2, per_second=0.01)
    async with KrakenPayClient(CREDS, base_url=sim.url, rate_budget=budget) as client:
        for _ in range(2):
            with pytest.raises(PayRequestError):  # sent: Kraken knows no such request
                await client.cancel_request("AAAAAAAAAAE")
        with pytest.raises(RateLimited) as refused:
            await client.cancel_request("AAAAAAAAAAE")
    assert refused.value.retry_after > 90
    assert sim.stats()["requests"] == 2


async def test_krakens_rate_limit_answer_holds_back_every_client_of_the_key(sim, fake_redis):
    mine = budget_on(fake_redis, capacity=100, per_second=100)
    theirs = budget_on(fake_redis, capacity=100, per_second=100)
    sim.set_faults({"rate_limit": {"next": 1}})
    async with KrakenPayClient(CREDS, base_url=sim.url, rate_budget=mine) as client:
        with pytest.raises(RateLimited):
            await client.cancel_request("AAAAAAAAAAE")
    async with KrakenPayClient(CREDS, base_url=sim.url, rate_budget=theirs) as other:
        with pytest.raises(RateLimited) as held:
            await other.cancel_request("AAAAAAAAAAE")
    assert held.value.retry_after > 0.5  # a full refill: capacity / per_second = 1 s
    assert sim.stats()["requests"] == 1
