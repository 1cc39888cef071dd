"""Retry-After comes from outside: parsed safely, capped, and never books the key for years."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import redis.asyncio as aioredis

from kraken.pay import Credentials, KrakenPayClient, RateBudget
from kraken.pay.errors import DEFAULT_MAX_RETRY_AFTER, RateLimited, parse_retry_after
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET

CREDS = Credentials(DEMO_API_KEY, DEMO_API_SECRET)
NOW = 1_800_000_000.0


def http_date(seconds_from_now: float) -> str:
    moment = datetime.fromtimestamp(NOW, timezone.utc) + timedelta(seconds=seconds_from_now)
    return format_datetime(moment, usegmt=True)


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("300", 300.0),
        ("301", 300.0),  # over the cap: the cap
        ("1000000000", 300.0),  # 31 years
        ("1e400", 300.0),  # a float overflows to inf
        ("inf", 300.0),
        ("Infinity", 300.0),
        ("9" * 500, 300.0),
        (http_date(30), 30.0),
        (http_date(-30), 0.0),  # already passed: go now
        (http_date(10 * 365 * 86400), 300.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 300.0),
    ],
)
def test_a_usable_retry_after_is_seconds_at_most_the_cap(value, seconds):
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    "value", [None, "", "nan", "NaN", "-5", "-inf", "soon", "1_000", "Mon, 99 Foo 2026 25:61 GMT"]
)
def test_an_unusable_retry_after_is_ignored(value):
    assert parse_retry_after(value, now=NOW) is None


def test_the_default_cap_is_five_minutes():
    assert DEFAULT_MAX_RETRY_AFTER == 300.0
    assert parse_retry_after("86400") == 300.0
    assert parse_retry_after("86400", cap=10.0) == 10.0


# ----------------------------------------------------------------------------- the client


@pytest.mark.parametrize("value", ["inf", "1e400", "1000000000", "nan", "-1"])
async def test_a_hostile_retry_after_is_a_capped_rate_limit_not_an_overflow(kraken, value):
    kraken.answer, kraken.retry_after = "rate_limited", value
    async with KrakenPayClient(CREDS, base_url=kraken.url, max_retry_after=60) as client:
        with pytest.raises(RateLimited) as info:
            await client.cancel_request("AAAAAAAAAAE")
    expected = None if value in ("nan", "-1") else 60.0
    assert info.value.retry_after == expected
    assert info.value.transient


async def test_a_huge_retry_after_books_the_shared_budget_no_further_than_the_cap(
    kraken, fake_redis
):
    kraken.answer, kraken.retry_after = "rate_limited", "1000000000"  # 31 years, as measured
    budget = RateBudget(fake_redis, CREDS.key_id, capacity=15, per_second=0.33, max_wait=10)
    async with KrakenPayClient(CREDS, base_url=kraken.url, rate_budget=budget) as client:
        with pytest.raises(RateLimited):
            await client.cancel_request("AAAAAAAAAAE")

    held = await _held_seconds(fake_redis, budget)
    burst = (budget.capacity - budget.headroom) / budget.per_second
    assert DEFAULT_MAX_RETRY_AFTER <= held <= DEFAULT_MAX_RETRY_AFTER + burst + 1
    with pytest.raises(RateLimited) as info:  # another worker of the key: held back, not 31 years
        await budget.acquire()
    one_call = 1 / budget.per_second  # the call after the pause waits its own interval too
    assert DEFAULT_MAX_RETRY_AFTER <= info.value.retry_after <= DEFAULT_MAX_RETRY_AFTER + one_call


async def _held_seconds(redis: aioredis.Redis, budget: RateBudget) -> float:
    """How far ahead of Redis's clock the budget's TAT stands."""
    seconds, micros = await redis.time()
    tat = int(await redis.get(budget.redis_key))
    return (tat - (seconds * 1_000_000 + micros)) / 1_000_000


# ----------------------------------------------------------------------------- the budget


@pytest.mark.parametrize(
    ("seconds", "pause"),
    [(math.inf, 300.0), (1e12, 300.0), (-5.0, 0.0), (math.nan, 45.0), (None, 45.0), (2.0, 2.0)],
)
async def test_penalize_is_capped_at_max_pause(fake_redis, seconds, pause):
    budget = RateBudget(fake_redis, "k", capacity=15, per_second=1 / 3, headroom=0)
    burst = budget.capacity / budget.per_second  # the next call goes at TAT - burst
    await budget.penalize(seconds)
    assert pause + burst - 1 <= await _held_seconds(fake_redis, budget) <= pause + burst


async def test_a_budget_booked_years_ahead_by_an_old_client_is_read_as_its_horizon(fake_redis):
    budget = RateBudget(fake_redis, "k", capacity=15, per_second=0.33, max_wait=10)
    seconds, _ = await fake_redis.time()
    years_ahead = (seconds + 31 * 365 * 86400) * 1_000_000
    await fake_redis.set(budget.redis_key, str(years_ahead))

    started = time.monotonic()
    with pytest.raises(RateLimited) as info:
        await budget.acquire()
    assert time.monotonic() - started < 1
    assert info.value.retry_after <= DEFAULT_MAX_RETRY_AFTER + 2 / budget.per_second + 1

    await budget.penalize(1.0)  # the next write brings the stored TAT back within the horizon
    assert await _held_seconds(fake_redis, budget) <= DEFAULT_MAX_RETRY_AFTER + 100


@pytest.mark.parametrize("field", ["max_pause", "max_wait", "capacity", "per_second"])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_a_budget_refuses_non_finite_numbers_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field}: must be .*, finite, not {value}$"):
        RateBudget(aioredis.Redis(), "k", **{field: value})
